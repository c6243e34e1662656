"""Bug: optimizer.step() is called twice per iteration (a copy-paste leftover).

The second call re-applies the same gradients. Expected: step-without-backward at
step 1 (the second step of the first iteration), optimizer 0.
"""

import torch
from torch import nn

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
x = torch.randn(256, 8)
y = x.sum(dim=1, keepdim=True)
optimizer = torch.optim.SGD(model.parameters(), lr=0.005)
for step in range(20):
    xb, yb = x[(step * 32) % 256 :][:32], y[(step * 32) % 256 :][:32]
    optimizer.zero_grad()
    loss = nn.functional.mse_loss(model(xb), yb)
    loss.backward()
    optimizer.step()
    optimizer.step()  # again, with the same gradients
print(f"final loss {loss.item():.6f}")

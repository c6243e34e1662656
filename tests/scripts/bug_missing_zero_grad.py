"""Bug: zero_grad() is never called, so each step adds the new gradients to the old.

Expected: missing-zero-grad at step 1 (step 0's gradients were fresh), optimizer 0,
first parameter 0.weight; repeated on every later step, reported once.
"""

import torch
from torch import nn

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
x = torch.randn(256, 8)
y = x.sum(dim=1, keepdim=True)
optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
for step in range(30):
    xb, yb = x[(step * 32) % 256 :][:32], y[(step * 32) % 256 :][:32]
    loss = nn.functional.mse_loss(model(xb), yb)
    loss.backward()  # accumulates into the previous iteration's gradients
    optimizer.step()
print(f"final loss {loss.item():.6f}")

"""Bug: optimizer.step() before loss.backward(): each step finds no fresh gradients.

Expected: step-without-backward at step 0, optimizer 0.
"""

import torch
from torch import nn

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
x = torch.randn(256, 8)
y = x.sum(dim=1, keepdim=True)
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
for step in range(30):
    xb, yb = x[(step * 32) % 256 :][:32], y[(step * 32) % 256 :][:32]
    optimizer.zero_grad()
    loss = nn.functional.mse_loss(model(xb), yb)
    optimizer.step()  # belongs after backward()
    loss.backward()
print(f"final loss {loss.item():.6f}")

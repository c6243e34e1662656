"""Bug: a custom initialization leaves an infinite value in a hidden layer's bias.

The forward pass turns it into an infinite output and loss at step 0, and the
backward into non-finite gradients everywhere. Expected: nonfinite at step 0,
optimizer 0, param 0.weight (the first parameter whose gradient is not finite:
by the time the step is judged, the update has spread the Inf to every parameter).
"""

import torch
from torch import nn

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 1))
with torch.no_grad():
    model[2].bias.fill_(0.1)
    model[2].bias[3] = float("inf")  # the bad init
x = torch.randn(320, 8)
y = x.sum(dim=1, keepdim=True)
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
for step in range(10):
    xb, yb = x[step * 32 :][:32], y[step * 32 :][:32]
    optimizer.zero_grad()
    loss = nn.functional.mse_loss(model(xb), yb)
    loss.backward()
    optimizer.step()
print(f"final loss {loss.item():.6f}")

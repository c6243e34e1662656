"""Correct loop: a custom Optimizer subclass whose step() calls super().step().

A plain SGD is built too (first, for a probe parameter, and never stepped), so
SGD.step is wrapped by PyTorch's step hooks as well as MySGD.step: one call to
MySGD.step runs both wrappers, and stepdbg must count it once.
"""

import torch
from torch import nn


class MySGD(torch.optim.SGD):
    def __init__(self, params, lr):
        super().__init__(params, lr=lr, momentum=0.9)
        self.calls = 0

    def step(self, closure=None):
        self.calls += 1
        return super().step(closure)


torch.manual_seed(0)
probe = nn.Linear(1, 1)
probe_optimizer = torch.optim.SGD(probe.parameters(), lr=0.1)  # built, never stepped
model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 1))
x = torch.randn(256, 8)
y = x.sum(dim=1, keepdim=True)
optimizer = MySGD(model.parameters(), lr=0.02)
for step in range(30):
    xb, yb = x[(step * 32) % 256 :][:32], y[(step * 32) % 256 :][:32]
    optimizer.zero_grad()
    loss = nn.functional.mse_loss(model(xb), yb)
    loss.backward()
    optimizer.step()
print(f"final loss {loss.item():.6f} steps {optimizer.calls}")

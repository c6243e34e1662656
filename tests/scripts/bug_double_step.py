"""Bug: optimizer.step() is called twice per iteration (a copy-paste leftover).

    python bug_double_step.py [same|zeroed]

The second call re-applies the same gradients (``same``), or steps on gradients
``zero_grad(set_to_none=False)`` has just zeroed (``zeroed``: momentum still moves
the weights). Expected: step-without-backward at step 1 (the second step of the
first iteration), optimizer 0.
"""

import sys

import torch
from torch import nn

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
x = torch.randn(256, 8)
y = x.sum(dim=1, keepdim=True)
optimizer = torch.optim.SGD(model.parameters(), lr=0.005, momentum=0.5)
for step in range(20):
    xb, yb = x[(step * 32) % 256 :][:32], y[(step * 32) % 256 :][:32]
    optimizer.zero_grad()
    loss = nn.functional.mse_loss(model(xb), yb)
    loss.backward()
    optimizer.step()
    if sys.argv[1:] == ["zeroed"]:
        optimizer.zero_grad(set_to_none=False)
    optimizer.step()  # again, without a backward
print(f"final loss {loss.item():.6f}")

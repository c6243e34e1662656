"""Bug: optimizer.step() before loss.backward(): each step uses no (or stale) gradients.

stepdbg run examples/step_before_backward.py    # -> step-without-backward at step 0
"""

import torch
from _common import batches, make_problem
from torch import nn

model, x, y = make_problem()
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
for _step, xb, yb in batches(x, y, steps=60):
    optimizer.zero_grad()
    loss = nn.functional.mse_loss(model(xb), yb)
    optimizer.step()  # belongs after backward()
    loss.backward()
print(f"final loss {loss.item():.4f}")

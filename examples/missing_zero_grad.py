"""Bug: optimizer.zero_grad() is never called, so gradients pile up across iterations.

stepdbg run examples/missing_zero_grad.py    # -> missing-zero-grad at step 1
"""

import torch
from _common import batches, make_problem
from torch import nn

model, x, y = make_problem()
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
for _step, xb, yb in batches(x, y, steps=60):
    loss = nn.functional.mse_loss(model(xb), yb)
    loss.backward()  # accumulates into last iteration's gradients
    optimizer.step()
print(f"final loss {loss.item():.4f}")

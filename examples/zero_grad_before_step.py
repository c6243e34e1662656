"""Bug: zero_grad() between backward() and step(): every step applies nothing.

stepdbg run examples/zero_grad_before_step.py    # -> zero-grad-before-step at step 0
"""

import torch
from _common import batches, make_problem
from torch import nn

model, x, y = make_problem()
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
for _step, xb, yb in batches(x, y, steps=60):
    loss = nn.functional.mse_loss(model(xb), yb)
    loss.backward()
    optimizer.zero_grad()  # wipes the gradients just computed
    optimizer.step()
print(f"final loss {loss.item():.4f}")

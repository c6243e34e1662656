"""Bug: scheduler.step() above optimizer.step(): the schedule runs one step ahead.

stepdbg run examples/scheduler_before_step.py    # -> scheduler-before-step at step 0
"""

import torch
from _common import batches, make_problem
from torch import nn

model, x, y = make_problem()
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=20, gamma=0.5)
for _step, xb, yb in batches(x, y, steps=60):
    optimizer.zero_grad()
    loss = nn.functional.mse_loss(model(xb), yb)
    loss.backward()
    scheduler.step()  # belongs after optimizer.step()
    optimizer.step()
print(f"final loss {loss.item():.4f}")

"""Correct loop: gradient accumulation, 4 backward passes per optimizer step.

The loss is divided by the number of micro-batches; zero_grad runs after each step,
so each step consumes exactly the 4 micro-batches since the previous one.
"""

import os

import torch
from torch import nn

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 1))
x = torch.randn(384, 8)
y = x.sum(dim=1, keepdim=True)
accumulate = 4
micro_batches = 48
optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
optimizer.zero_grad()
for i in range(micro_batches):
    xb, yb = x[i * 8 : (i + 1) * 8], y[i * 8 : (i + 1) * 8]
    loss = nn.functional.mse_loss(model(xb), yb) / accumulate
    loss.backward()
    if (i + 1) % accumulate == 0:
        optimizer.step()
        optimizer.zero_grad()
print(f"final loss {loss.item() * accumulate:.6f}")
if os.environ.get("STEPDBG_TEST_OUT"):
    torch.save(
        {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "rng": torch.get_rng_state()},
        os.environ["STEPDBG_TEST_OUT"],
    )

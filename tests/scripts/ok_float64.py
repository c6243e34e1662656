"""Correct loop: a float64 model (scientific ML: physics-informed nets, small regressions).

stepdbg takes float64 gradients' norms in float64: the trace's norms match the
script's own to float64 precision.
"""

import math
import os

import torch
from torch import nn

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, 1)).double()
optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
x = torch.rand(128, 2, dtype=torch.float64)
y = torch.sin(3 * x[:, :1]) * torch.cos(2 * x[:, 1:])
grad_norms = []
for _step in range(20):
    optimizer.zero_grad()
    loss = nn.functional.mse_loss(model(x), y)
    loss.backward()
    grad_norms.append(math.sqrt(sum(float(p.grad.pow(2).sum()) for p in model.parameters())))
    optimizer.step()
print(f"final loss {loss.item():.12f}")
if os.environ.get("STEPDBG_TEST_OUT"):
    torch.save(
        {"model": model.state_dict(), "rng": torch.get_rng_state(), "grad_norms": grad_norms},
        os.environ["STEPDBG_TEST_OUT"],
    )

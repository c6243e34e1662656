"""Correct loop: LBFGS with a closure that calls zero_grad, forward and backward.

LBFGS evaluates the closure several times inside each step(); stepdbg must count
one step per step() call.
"""

import os

import torch
from torch import nn

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1))
x = torch.randn(64, 4)
y = torch.sin(x.sum(dim=1, keepdim=True))
optimizer = torch.optim.LBFGS(model.parameters(), lr=0.5, max_iter=5, history_size=10)
evaluations = 0


def closure():
    global evaluations
    evaluations += 1
    optimizer.zero_grad()
    loss = nn.functional.mse_loss(model(x), y)
    loss.backward()
    return loss


for _step in range(15):
    loss = optimizer.step(closure)
print(f"final loss {loss.item():.6f} closure calls {evaluations}")
if os.environ.get("STEPDBG_TEST_OUT"):
    torch.save(
        {"model": model.state_dict(), "rng": torch.get_rng_state(), "evaluations": evaluations},
        os.environ["STEPDBG_TEST_OUT"],
    )

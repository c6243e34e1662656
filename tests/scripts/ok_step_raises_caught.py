"""Correct loop: an optimizer's step raises once (an out-of-memory error the script
catches: the batch is skipped), and training goes on with the same optimizer; a
second model's optimizer steps after it every iteration.

PyTorch runs no step post-hook for a step that raised; the steps after it are
recorded all the same: 19 of the 20 iterations, and all 20 of the other optimizer's.
"""

import torch
from torch import nn


class Flaky(torch.optim.SGD):
    calls = 0

    def step(self, closure=None):
        Flaky.calls += 1
        if Flaky.calls == 3:
            raise torch.OutOfMemoryError("simulated")
        return super().step(closure)


torch.manual_seed(0)
model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
other = nn.Linear(4, 1)
x, y = torch.randn(32, 4), torch.randn(32, 1)
optimizer = Flaky(model.parameters(), lr=1e-2)
other_optimizer = torch.optim.SGD(other.parameters(), lr=1e-2)
for step in range(20):
    optimizer.zero_grad()
    other_optimizer.zero_grad()
    loss = nn.functional.mse_loss(model(x), y) + nn.functional.mse_loss(other(x), y)
    loss.backward()
    try:
        optimizer.step()
    except torch.OutOfMemoryError:
        print(f"skipped batch {step}")
    other_optimizer.step()
print(f"final loss {loss.item():.6f}")

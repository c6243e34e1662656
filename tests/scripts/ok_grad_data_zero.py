"""Correct loop: gradients cleared by writing through ``.data``, as old tutorials do.

Each step clears every gradient before backward in one of the ways found in older
code: ``p.grad.data.zero_()``, the same under ``torch.no_grad()``,
``p.grad.data.mul_(0)``, ``p.grad.data = torch.zeros_like(p.grad)`` and
``p.grad.detach().zero_()``. Writes through ``.data`` move no version counter, so
only the values say the gradients were cleared: no missing-zero-grad, and every
step after the first shows the clear as a ``zero_grad`` call.
"""

import torch
from torch import nn


def clear(p: torch.Tensor, way: int) -> None:
    if way == 0:
        p.grad.data.zero_()
    elif way == 1:
        with torch.no_grad():
            p.grad.data.zero_()
    elif way == 2:
        p.grad.data.mul_(0)
    elif way == 3:
        p.grad.data = torch.zeros_like(p.grad)
    else:
        p.grad.detach().zero_()


torch.manual_seed(0)
model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
x = torch.randn(256, 8)
y = x.sum(dim=1, keepdim=True)
optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
for step in range(10):
    xb, yb = x[(step * 32) % 256 :][:32], y[(step * 32) % 256 :][:32]
    for p in model.parameters():
        if p.grad is not None:
            clear(p, step % 5)
    loss = nn.functional.mse_loss(model(xb), yb)
    loss.backward()
    optimizer.step()
print(f"final loss {loss.item():.6f}")

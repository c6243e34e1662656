"""Correct loop: gradients cleared by hand after the step, with an optimizer.

    python ok_grad_none_manual.py [none|zeros]

``none`` clears with ``p.grad = None``, ``zeros`` with ``p.grad = torch.zeros_like(p)``.
"""

import sys

import torch
from torch import nn

mode = sys.argv[1] if len(sys.argv) > 1 else "none"

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 1))
x = torch.randn(256, 8)
y = x.sum(dim=1, keepdim=True)
optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
for step in range(30):
    xb, yb = x[(step * 32) % 256 :][:32], y[(step * 32) % 256 :][:32]
    loss = nn.functional.mse_loss(model(xb), yb)
    loss.backward()
    optimizer.step()
    for p in model.parameters():
        p.grad = None if mode == "none" else torch.zeros_like(p)
print(f"final loss {loss.item():.6f}")

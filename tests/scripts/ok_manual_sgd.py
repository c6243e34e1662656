"""Correct loop without any optimizer: hand-written SGD.

    python ok_manual_sgd.py [none|zero]

``none`` clears with ``p.grad = None``, ``zero`` with ``p.grad.zero_()``.
stepdbg writes one step record per backward pass, with ``optimizer: null``.
"""

import sys

import torch
from torch import nn

mode = sys.argv[1] if len(sys.argv) > 1 else "none"
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
x = torch.randn(128, 8)
y = x.sum(dim=1, keepdim=True)
lr = 0.02
for _step in range(30):
    loss = nn.functional.mse_loss(model(x), y)
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            p -= lr * p.grad
            if mode == "none":
                p.grad = None
            else:
                p.grad.zero_()
print(f"final loss {loss.item():.6f}")

"""Correct loop: one head per task, a task drawn at random each step.

Each head gets gradients only at its task's steps, often more than 20 steps
apart: used sometimes, not unused.
"""

import torch
from torch import nn

torch.manual_seed(0)
trunk = nn.Sequential(nn.Linear(8, 16), nn.ReLU())
heads = nn.ModuleList(nn.Linear(16, 1) for _ in range(30))
optimizer = torch.optim.Adam([*trunk.parameters(), *heads.parameters()], lr=1e-3)
tasks = torch.randint(len(heads), (120,), generator=torch.Generator().manual_seed(1)).tolist()
for task in tasks:
    x, y = torch.randn(16, 8), torch.randn(16, 1)
    optimizer.zero_grad()
    loss = nn.functional.mse_loss(heads[task](trunk(x)), y)
    loss.backward()
    optimizer.step()
print(f"final loss {loss.item():.6f}")

"""Correct loop: multi-task training that alternates tasks, one optimizer per head.

Each iteration trains one task: the shared trunk and that task's head get gradients,
the other head gets none. Every optimizer steps every iteration anyway; one whose
parameters the backward did not reach finds no gradient and PyTorch skips them.
"""

import os

import torch
from torch import nn

torch.manual_seed(0)
trunk = nn.Sequential(nn.Linear(8, 16), nn.ReLU())
heads = nn.ModuleList([nn.Linear(16, 1), nn.Linear(16, 3)])
optimizers = [
    torch.optim.Adam(trunk.parameters(), lr=1e-2),
    torch.optim.Adam(heads[0].parameters(), lr=1e-2),
    torch.optim.Adam(heads[1].parameters(), lr=1e-2),
]
x = torch.randn(64, 8)
targets = [torch.randn(64, 1), torch.randn(64, 3)]
for i in range(30):
    task = i % 2
    for optimizer in optimizers:
        optimizer.zero_grad()
    loss = nn.functional.mse_loss(heads[task](trunk(x)), targets[task])
    loss.backward()
    for optimizer in optimizers:
        optimizer.step()
print(f"final loss {loss.item():.6f}")
if os.environ.get("STEPDBG_TEST_OUT"):
    torch.save(
        {"trunk": trunk.state_dict(), "heads": heads.state_dict(), "rng": torch.get_rng_state()},
        os.environ["STEPDBG_TEST_OUT"],
    )

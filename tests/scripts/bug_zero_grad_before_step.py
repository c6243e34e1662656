"""Bug: zero_grad() between backward() and step(): every step applies nothing.

    python bug_zero_grad_before_step.py [clip]

``clip`` zeroes in place (set_to_none=False) and clips the gradients after it, which
writes them in place once more (still zeros). Expected: zero-grad-before-step at
step 0, optimizer 0.
"""

import sys

import torch
from torch import nn

clip = sys.argv[1:] == ["clip"]

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
x = torch.randn(256, 8)
y = x.sum(dim=1, keepdim=True)
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
for step in range(30):
    xb, yb = x[(step * 32) % 256 :][:32], y[(step * 32) % 256 :][:32]
    loss = nn.functional.mse_loss(model(xb), yb)
    loss.backward()
    optimizer.zero_grad(set_to_none=not clip)  # wipes the gradients just computed
    if clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
print(f"final loss {loss.item():.6f}")

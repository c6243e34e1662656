"""Bug: zero_grad() inside the gradient-accumulation loop: each step uses only the last of
its 4 micro-batches; the other 3 backward passes are cleared unused.

Expected: zero-grad-before-step at step 3, optimizer 0 (the third step in a row that
discards backward passes; the first step has nothing to compare with), counted at
every step from there: 22 times in 25 steps.
"""

import torch
from torch import nn

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
x = torch.randn(800, 8)
y = x.sum(dim=1, keepdim=True)
for step in range(25):
    for micro in range(4):
        optimizer.zero_grad()  # belongs after optimizer.step()
        at = (step * 4 + micro) * 8
        loss = nn.functional.mse_loss(model(x[at : at + 8]), y[at : at + 8]) / 4
        loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
print(f"final loss {loss.item():.6f}")

"""Bug: zero_grad() is never called, so each step adds the new gradients to the old.

    python bug_missing_zero_grad.py [accumulate]

``accumulate`` sums 3 micro-batches per step (gradient accumulation, still never
cleared). Expected: missing-zero-grad at step 1 (step 0's gradients were fresh),
optimizer 0, first parameter 0.weight; repeated on every later step, reported once.
With ``accumulate`` every record still has calls ``backward×3, step``, 3 backward
passes and the sum of their 3 losses.
"""

import sys

import torch
from torch import nn

micro_batches = 3 if sys.argv[1:] == ["accumulate"] else 1
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
x = torch.randn(256, 8)
y = x.sum(dim=1, keepdim=True)
optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
for step in range(30):
    for micro in range(micro_batches):
        at = (step * micro_batches + micro) * 32 % 256
        loss = nn.functional.mse_loss(model(x[at:][:32]), y[at:][:32]) / micro_batches
        loss.backward()  # accumulates into the previous iteration's gradients
        print(f"loss {loss.item():.9g}")
    optimizer.step()
print(f"final loss {loss.item():.6f}")

"""Correct loop whose loss is NaN at two steps: every label of those batches is ignored.

Token classification with padding labels (-100): a batch of padding alone has a
mean loss of 0/0 = NaN and gradients that are exactly zero, which the step applies
harmlessly (Opacus's Poisson sampling gives empty batches the same way). Expected:
one nonfinite-loss record (info) at step 5, counted twice (steps 5 and 12), and no
warning or error: --strict exits 0.
"""

import torch
from torch import nn

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 4))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
x = torch.randn(20, 16, 8)
labels = torch.randint(0, 4, (20, 16))
labels[5] = labels[12] = -100  # batches of padding only
for step in range(20):
    optimizer.zero_grad()
    loss = nn.functional.cross_entropy(model(x[step]), labels[step], ignore_index=-100)
    loss.backward()
    optimizer.step()
    print(f"step {step} loss {loss.item():.4f}")

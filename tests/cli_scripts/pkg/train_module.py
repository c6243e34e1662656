"""Run with `stepdbg run -m pkg.train_module`: a module entry point."""

import json
import sys

import torch

model = torch.nn.Linear(2, 1)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
for _ in range(3):
    optimizer.zero_grad()
    model(torch.ones(1, 2)).sum().backward()
    optimizer.step()
print(json.dumps({"name": __name__, "argv": sys.argv}))

"""Correct loop: Reptile (first-order meta-learning), as in OpenAI's reference loop.

Each iteration trains a copy of the model with a fresh inner optimizer, then writes
the meta-gradient into p.grad by hand after meta_opt.zero_grad(), and meta_opt.step()
consumes it. The inner backward passes never reach the meta-model's parameters: the
clear before the hand-written gradients is no zero_grad between backward and step.
Each inner optimizer's first step consumes one backward, not every one since the run began.

    python ok_reptile.py [all|head]

``head`` writes the meta-gradient for the last layer only, the others' left None (ANIL).
"""

import copy
import sys

import torch
from torch import nn

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(1, 16), nn.Tanh(), nn.Linear(16, 1))
meta_opt = torch.optim.Adam(model.parameters(), lr=1e-2)
for _iteration in range(10):
    x = torch.rand(20, 1) * 10 - 5
    y = torch.sin(x + torch.rand(1))
    fast = copy.deepcopy(model)
    inner = torch.optim.SGD(fast.parameters(), lr=0.02)
    for _k in range(3):
        inner.zero_grad()
        nn.functional.mse_loss(fast(x), y).backward()
        inner.step()
    meta_opt.zero_grad()
    pairs = list(zip(model.parameters(), fast.parameters()))
    for p, f in pairs[-2:] if sys.argv[1:] == ["head"] else pairs:
        p.grad = p.detach() - f.detach()  # the meta-gradient, set by hand
    meta_opt.step()
print(f"final sum {sum(float(p.detach().sum()) for p in model.parameters()):.6f}")

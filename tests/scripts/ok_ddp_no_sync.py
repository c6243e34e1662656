"""Correct loop: DistributedDataParallel on 2 CPU ranks (gloo), gradient accumulation with no_sync.

Run under torchrun. Each rank trains on its own batches (different losses); the
last micro-batch's backward all-reduces, so every rank's step consumes the same
gradients.
"""

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

dist.init_process_group("gloo")
torch.manual_seed(0)
model = DistributedDataParallel(nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1)))
optimizer = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
torch.manual_seed(1 + dist.get_rank())
x = torch.randn(64, 8)
y = x.sum(dim=1, keepdim=True)
accumulate = 4
for _step in range(12):
    optimizer.zero_grad()
    for micro in range(accumulate):
        last = micro == accumulate - 1
        with model.no_sync() if not last else torch.enable_grad():
            loss = nn.functional.mse_loss(model(x[micro::accumulate]), y[micro::accumulate]) / accumulate
            loss.backward()
    optimizer.step()
dist.destroy_process_group()

"""Correct loop: ZeroRedundancyOptimizer, which steps an inner optimizer on this rank's shard.

The inner optimizer's step runs inside ZeroRedundancyOptimizer's: one step record per
iteration, the wrapper's, whose gradient norm is that of every parameter. One rank
(world size 1), so it runs as a plain script.
"""

import os
import tempfile

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.optim import ZeroRedundancyOptimizer

store, store_path = tempfile.mkstemp()
os.close(store)
dist.init_process_group("gloo", init_method=f"file://{store_path}", rank=0, world_size=1)
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
optimizer = ZeroRedundancyOptimizer(model.parameters(), optimizer_class=torch.optim.SGD, lr=1e-2, momentum=0.9)
x = torch.randn(64, 8)
y = x.sum(dim=1, keepdim=True)
for _step in range(20):
    optimizer.zero_grad()
    loss = nn.functional.mse_loss(model(x), y)
    loss.backward()
    optimizer.step()
dist.destroy_process_group()
os.remove(store_path)
print(f"final loss {loss.item():.6f}")

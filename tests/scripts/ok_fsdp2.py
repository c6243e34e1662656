"""Correct loop: FSDP2 (``fully_shard``) on 2 CPU ranks (gloo), under torchrun.

Parameters and gradients are DTensors sharded across the ranks; each rank's trace
has the norms of its own shards. The script prints each step's global gradient
norm (a collective of its own) for the test to compare with the traces.
"""

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import fully_shard

dist.init_process_group("gloo")
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
for layer in (model[0], model[2]):
    fully_shard(layer)
fully_shard(model)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
torch.manual_seed(1 + dist.get_rank())
x = torch.randn(32, 8)
y = x.sum(dim=1, keepdim=True)
for _step in range(10):
    optimizer.zero_grad()
    nn.functional.mse_loss(model(x), y).backward()
    total = torch.nn.utils.get_total_norm([p.grad for p in model.parameters()]).full_tensor().item()
    optimizer.step()
    if dist.get_rank() == 0:
        print(f"grad norm {total!r}", flush=True)
dist.destroy_process_group()

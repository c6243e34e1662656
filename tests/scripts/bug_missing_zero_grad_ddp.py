"""Bug: zero_grad forgotten under DistributedDataParallel with gradient_as_bucket_view.

The gradients are views into DDP's buckets, which DDP rebuilds at its second forward:
each parameter's .grad becomes a new tensor holding the same values, and the next
backward adds to them. Expected: missing-zero-grad at step 1, optimizer 0, param
module.0.weight, counted at steps 1-9. One rank (world size 1), so it runs as a plain script.
"""

import os
import tempfile

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

store, store_path = tempfile.mkstemp()
os.close(store)
dist.init_process_group("gloo", init_method=f"file://{store_path}", rank=0, world_size=1)
torch.manual_seed(0)
model = DistributedDataParallel(
    nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1)), gradient_as_bucket_view=True
)
optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
x = torch.randn(64, 8)
y = x.sum(dim=1, keepdim=True)
for _step in range(10):
    loss = nn.functional.mse_loss(model(x), y)
    loss.backward()
    optimizer.step()
dist.destroy_process_group()
os.remove(store_path)
print(f"final loss {loss.item():.6f}")

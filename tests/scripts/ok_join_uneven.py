"""Correct loop: DDP with uneven inputs under torch.distributed's Join, with ZeroRedundancyOptimizer.

Run under torchrun with 2 ranks: rank 0 has 12 batches, rank 1 has 8. Once rank 1 is
out of inputs, Join's hooks shadow the other rank's collectives, and ZeRO's hook steps
rank 1's optimizer on the gradients it has (PyTorch's design): no backward, no mistake.
"""

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.algorithms.join import Join
from torch.distributed.optim import ZeroRedundancyOptimizer
from torch.nn.parallel import DistributedDataParallel

dist.init_process_group("gloo")
rank = dist.get_rank()
torch.manual_seed(0)
model = DistributedDataParallel(nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 1)))
optimizer = ZeroRedundancyOptimizer(model.parameters(), optimizer_class=torch.optim.SGD, lr=1e-2, momentum=0.9)
torch.manual_seed(1 + rank)
with Join([model, optimizer]):
    for _step in range(12 if rank == 0 else 8):
        x = torch.randn(16, 8)
        optimizer.zero_grad()
        nn.functional.mse_loss(model(x), x.sum(dim=1, keepdim=True)).backward()
        optimizer.step()
dist.destroy_process_group()

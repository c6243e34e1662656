"""DDP on 2 CPU ranks (gloo), rank 1 slow on purpose: steps 0-11 it sleeps in its forward,
steps 12-23 its DataLoader does (the collate function sleeps), 50 ms each time, on steps
of about a millisecond. Run under torchrun; the model has no buffers, so rank 0 waits for
rank 1 in backward's all-reduce both times.
"""

import time

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, default_collate

SLEEP = 0.05
STEPS = 12
dist.init_process_group("gloo")
slow_rank = dist.get_rank() == 1
slow_phase = "forward"


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if slow_rank and slow_phase == "forward":
            time.sleep(SLEEP)
        return self.body(x)


def collate(samples: list) -> list:
    if slow_rank and slow_phase == "data":
        time.sleep(SLEEP)
    return default_collate(samples)


torch.manual_seed(0)
model = DistributedDataParallel(Net())
optimizer = torch.optim.SGD(model.parameters(), lr=1e-2)
torch.manual_seed(1 + dist.get_rank())
x = torch.randn(2 * STEPS * 8, 8)
data = torch.utils.data.TensorDataset(x, x.sum(dim=1, keepdim=True))
batches = iter(DataLoader(data, batch_size=8, collate_fn=collate))
for step in range(2 * STEPS):
    slow_phase = "forward" if step < STEPS else "data"
    xb, yb = next(batches)
    optimizer.zero_grad()
    nn.functional.mse_loss(model(xb), yb).backward()
    optimizer.step()
dist.destroy_process_group()

"""DistributedDataParallel on 2 CPU ranks started as PyTorch's DDP tutorial does,
with ``torch.multiprocessing.spawn``.

    python ddp_spawn.py [ok|forget-zero-grad|raise|os-exit] [spawn|fork]

``ok``: a correct loop. ``forget-zero-grad``: rank 1 never clears its gradients
(missing-zero-grad on rank 1 at step 1). ``raise``: rank 1 raises after 3 steps.
``os-exit``: each rank ends with ``os._exit(0)`` once trained (no finally runs).
``fork``: ``start_processes(..., start_method="fork")`` instead of ``spawn``.
"""

import os
import socket
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel


def train(rank: int, world_size: int, mode: str) -> None:
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    torch.manual_seed(0)
    model = DistributedDataParallel(nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1)))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2)
    torch.manual_seed(1 + rank)
    x = torch.randn(64, 8)
    y = x.sum(dim=1, keepdim=True)
    for step in range(10):
        if not (mode == "forget-zero-grad" and rank == 1):
            optimizer.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()
        if mode == "raise" and rank == 1 and step == 2:
            raise ValueError("rank 1 gives up")
    dist.destroy_process_group()
    if mode == "os-exit":
        os._exit(0)


if __name__ == "__main__":
    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(s.getsockname()[1]))
    mode = sys.argv[1] if len(sys.argv) > 1 else "ok"
    if sys.argv[2:] == ["fork"]:
        mp.start_processes(train, args=(2, mode), nprocs=2, start_method="fork")
    else:
        mp.spawn(train, args=(2, mode), nprocs=2)
    print("trained")

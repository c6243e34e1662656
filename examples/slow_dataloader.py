"""Input-bound: a DataLoader whose samples are slow to load (each takes 2 ms).

    stepdbg run examples/slow_dataloader.py                  # -> input-bound, the data phase ~90%
    stepdbg run examples/slow_dataloader.py --workers 4      # the workers load ahead: less waiting
    stepdbg show slow_dataloader.stepdbg.jsonl

The loop times its own waits with time.perf_counter() around next() and prints the share
of its time they took: `stepdbg show` reports the same share for the data phase.
"""

import argparse
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset


class SlowDataset(Dataset):
    """Sample i, as if decoded from a slow disk."""

    def __init__(self, size: int, delay: float) -> None:
        self.size, self.delay = size, delay

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        time.sleep(self.delay)
        x = torch.linspace(-1, 1, 64) * (index % 7)
        return x, x.sum(dim=0, keepdim=True)


parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=60)
parser.add_argument("--workers", type=int, default=0)
parser.add_argument("--delay", type=float, default=2e-3, help="seconds to load one sample")
args = parser.parse_args()

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 1))
optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)
batch = 8
loader = DataLoader(SlowDataset(args.steps * batch, args.delay), batch_size=batch, num_workers=args.workers)

batches = iter(loader)
waited = 0.0
start = time.perf_counter()
for _ in range(args.steps):
    before = time.perf_counter()
    x, y = next(batches)
    waited += time.perf_counter() - before
    optimizer.zero_grad()
    loss = nn.functional.mse_loss(model(x), y)
    loss.backward()
    optimizer.step()
elapsed = time.perf_counter() - start
print(f"final loss {loss.item():.4f}")
print(f"waiting for batches: {waited / elapsed:.1%} of the loop ({waited:.3f} s of {elapsed:.3f} s)")

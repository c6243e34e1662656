"""The benchmark's training loops; prints the loop's seconds per step as JSON.

    python benchmarks/loops.py tiny|loader|wide|layerwise|medium [--steps N] [--profiler] [--device cuda]

tiny: MLP width 32, 2 layers, batch 16, AdamW + cosine scheduler (~0.5 ms/step).
loader: tiny, its batches from a DataLoader with 2 worker processes (persistent).
wide: 48 Linear layers of width 64 (~100 parameter tensors).
layerwise: wide with a param group per layer, lr decaying with depth (as fine-tuning recipes do).
medium: 8 Linear layers of width 1024 (~8M parameters).
One thread, so that the figures compare across machines with different core counts.
On CUDA (``--device cuda``) the timed loop is bracketed by device syncs, so that it
counts the device's work as well as the host's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time

import torch
from torch import nn

SHAPES = {
    "tiny": (2, 32, 16), "loader": (2, 32, 16), "wide": (48, 64, 16), "layerwise": (48, 64, 16),
    "medium": (8, 1024, 64),
}
STEPS = {"tiny": 3000, "loader": 3000, "wide": 300, "layerwise": 300, "medium": 40}
WARMUP = {"tiny": 50, "loader": 50, "wide": 10, "layerwise": 10, "medium": 3}
LOADER_WORKERS = 2
LAYERWISE_DECAY = 0.9
CUDA_STEPS = 1000
"""On a GPU even medium's step takes well under a millisecond: time enough of them."""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=sorted(SHAPES))
    parser.add_argument("--steps", type=int)
    parser.add_argument("--profiler", action="store_true", help="run the loop under torch.profiler")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    layers, width, batch = SHAPES[args.kind]
    device = torch.device(args.device)
    model = nn.Sequential(*[m for _ in range(layers) for m in (nn.Linear(width, width), nn.ReLU())][:-1]).to(device)
    steps = args.steps or (max(STEPS[args.kind], CUDA_STEPS) if device.type == "cuda" else STEPS[args.kind])
    warmup = WARMUP[args.kind]
    linears = [m for m in model if isinstance(m, nn.Linear)]
    groups = (
        [{"params": list(m.parameters()), "lr": 1e-3 * LAYERWISE_DECAY ** (layers - i)} for i, m in enumerate(linears)]
        if args.kind == "layerwise"
        else [{"params": list(model.parameters())}]
    )
    optimizer = torch.optim.AdamW(groups, lr=1e-3)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps + warmup)
    x, y = torch.randn(batch, width, device=device), torch.randn(batch, width, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    batches = None
    if args.kind == "loader":
        samples = (steps + warmup) * batch
        data = torch.utils.data.TensorDataset(torch.randn(samples, width), torch.randn(samples, width))
        batches = iter(
            torch.utils.data.DataLoader(data, batch_size=batch, num_workers=LOADER_WORKERS, persistent_workers=True)
        )

    def step() -> None:
        xb, yb = (x, y) if batches is None else (t.to(device, non_blocking=True) for t in next(batches))
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(xb), yb)
        loss.backward()
        optimizer.step()
        scheduler.step()

    for _ in range(warmup):
        step()
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    profiler = (
        torch.profiler.profile(activities=activities)
        if args.profiler
        else contextlib.nullcontext()
    )
    with profiler:
        sync()
        start = time.perf_counter()
        for _ in range(steps):
            step()
        sync()
        elapsed = time.perf_counter() - start
    print(json.dumps({"kind": args.kind, "steps": steps, "seconds_per_step": elapsed / steps}))


if __name__ == "__main__":
    main()

"""The benchmark's training loops; run as a script, one of them, timed, its figures printed as JSON.

    python benchmarks/loops.py KIND [--steps N] [--profiler] [--device cuda]

tiny: MLP width 32, 2 layers, batch 16, AdamW + cosine scheduler (~0.4 ms/step).
wide: 48 Linear layers of width 64 (~100 parameter tensors).
layerwise: wide with a param group per layer, lr decaying with depth (as fine-tuning recipes do).
medium: 8 Linear layers of width 1024 (~8M parameters).
loader: tiny, its batches from a DataLoader with 2 worker processes (persistent).
two: a GAN's loop at tiny's size: a generator and a discriminator, each with its own Adam,
  two steps an iteration, the generator's backward filling the discriminator's gradients too.

One thread, so that the figures compare across machines with different core counts.
The script prints the mean seconds per step over the timed loop and the lower quartile
of the steps' own times (steadier where the machine is shared: steps the scheduler
interrupted move the mean, and where they are more than half, the median). On CUDA
(``--device cuda``) the timed loop is bracketed by device syncs, so that the mean counts
the device's work as well as the host's; the quartile is the host's. `build` makes a
loop for another script (overhead.py's in-process mode, hook_profile.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

KINDS = ("tiny", "loader", "wide", "layerwise", "medium", "two")
SHAPES = {
    "tiny": (2, 32, 16),
    "loader": (2, 32, 16),
    "wide": (48, 64, 16),
    "layerwise": (48, 64, 16),
    "medium": (8, 1024, 64),
}
"""Layers, width, batch."""
STEPS = {"tiny": 3000, "loader": 3000, "wide": 300, "layerwise": 300, "medium": 40, "two": 1500}
WARMUP = {"tiny": 50, "loader": 50, "wide": 10, "layerwise": 10, "medium": 3, "two": 50}
STEPS_PER_ITERATION = {"two": 2}
"""Optimizer steps (trace records) an iteration makes, where not one."""
LAYERWISE_DECAY = 0.9
CUDA_STEPS = 1000
"""On a GPU even medium's step takes well under a millisecond: time enough of them."""
LOADER_WORKERS = 2
LOADER_BATCHES = 1000
"""Batches in the loader loop's dataset: an epoch ends now and then, as in real training."""


@dataclass
class Loop:
    """One training loop, ready to run: ``step`` is one iteration."""

    kind: str
    step: Callable[[], None]
    steps: int
    """Iterations to time, by default."""
    warmup: int
    sync: Callable[[], None]
    """Waits for the device's work (CUDA), or does nothing."""


def _mlp(layers: int, width: int) -> nn.Sequential:
    return nn.Sequential(*[m for _ in range(layers) for m in (nn.Linear(width, width), nn.ReLU())][:-1])


def build(kind: str, device: str = "cpu", steps: int | None = None) -> Loop:
    """The loop ``kind`` (see the module's docstring), seeded, with one torch thread."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    where = torch.device(device)
    count = steps or (max(STEPS[kind], CUDA_STEPS) if where.type == "cuda" else STEPS[kind])
    sync = torch.cuda.synchronize if where.type == "cuda" else _nothing
    step = _gan(where) if kind == "two" else _mlp_loop(kind, where, count + WARMUP[kind])
    return Loop(kind, step, count, WARMUP[kind], sync)


def _nothing() -> None:
    pass


def _mlp_loop(kind: str, device: torch.device, total_steps: int) -> Callable[[], None]:
    layers, width, batch = SHAPES[kind]
    model = _mlp(layers, width).to(device)
    linears = [m for m in model if isinstance(m, nn.Linear)]
    groups = (
        [{"params": list(m.parameters()), "lr": 1e-3 * LAYERWISE_DECAY ** (layers - i)} for i, m in enumerate(linears)]
        if kind == "layerwise"
        else [{"params": list(model.parameters())}]
    )
    optimizer = torch.optim.AdamW(groups, lr=1e-3)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    x, y = torch.randn(batch, width, device=device), torch.randn(batch, width, device=device)
    batches = _from_a_dataloader(width, batch) if kind == "loader" else None

    def step() -> None:
        xb, yb = (x, y) if batches is None else (t.to(device, non_blocking=True) for t in next(batches))
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(xb), yb)
        loss.backward()
        optimizer.step()
        scheduler.step()

    return step


def _gan(device: torch.device) -> Callable[[], None]:
    latent, width, batch = 16, 32, 16
    generator = nn.Sequential(nn.Linear(latent, width), nn.ReLU(), nn.Linear(width, width)).to(device)
    discriminator = nn.Sequential(nn.Linear(width, width), nn.LeakyReLU(0.2), nn.Linear(width, 1)).to(device)
    g_optimizer = torch.optim.Adam(generator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    d_optimizer = torch.optim.Adam(discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    real, noise = torch.randn(batch, width, device=device), torch.randn(batch, latent, device=device)
    ones, zeros = torch.ones(batch, 1, device=device), torch.zeros(batch, 1, device=device)
    bce = nn.functional.binary_cross_entropy_with_logits

    def step() -> None:
        fake = generator(noise)
        d_optimizer.zero_grad()
        d_loss = bce(discriminator(real), ones) + bce(discriminator(fake.detach()), zeros)
        d_loss.backward()
        d_optimizer.step()
        g_optimizer.zero_grad()
        g_loss = bce(discriminator(fake), ones)
        g_loss.backward()  # fills the discriminator's gradients too: its zero_grad clears them
        g_optimizer.step()

    return step


def _from_a_dataloader(width: int, batch: int) -> Iterator[list[torch.Tensor]]:
    """Batches from a DataLoader with worker processes, epoch after epoch."""
    samples = LOADER_BATCHES * batch
    data = torch.utils.data.TensorDataset(torch.randn(samples, width), torch.randn(samples, width))
    loader = torch.utils.data.DataLoader(data, batch_size=batch, num_workers=LOADER_WORKERS, persistent_workers=True)
    while True:
        yield from loader


def time_steps(loop: Loop, steps: int) -> tuple[float, list[float]]:
    """Run ``steps`` iterations: seconds in all (device work included), and each step's own."""
    clock = time.perf_counter
    times = []
    step = loop.step
    loop.sync()
    start = clock()
    for _ in range(steps):
        began = clock()
        step()
        times.append(clock() - began)
    loop.sync()
    return clock() - start, times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--profiler", action="store_true", help="run the loop under torch.profiler")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args()
    loop = build(args.kind, args.device, args.steps)
    for _ in range(loop.warmup):
        loop.step()
    activities = [torch.profiler.ProfilerActivity.CPU]
    if args.device == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    profiler = torch.profiler.profile(activities=activities) if args.profiler else contextlib.nullcontext()
    with profiler:
        elapsed, times = time_steps(loop, loop.steps)
    print(
        json.dumps(
            {
                "kind": args.kind,
                "steps": loop.steps,
                "seconds_per_step": elapsed / loop.steps,
                "typical_step": statistics.quantiles(times, n=4)[0],
            }
        )
    )


if __name__ == "__main__":
    main()

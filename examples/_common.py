"""Shared by the examples: a tiny regression problem, seeded, so runs are repeatable."""

import torch
from torch import nn


def make_problem(seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 1))
    x = torch.randn(256, 8)
    y = x.sum(dim=1, keepdim=True)
    return model, x, y


def batches(x: torch.Tensor, y: torch.Tensor, steps: int, size: int = 32):
    for step in range(steps):
        start = (step * size) % len(x)
        yield step, x[start : start + size], y[start : start + size]

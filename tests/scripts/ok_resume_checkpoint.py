"""Correct loop: a run resumed from a checkpoint, as every long job is.

Train N steps (argv[1]), save model, optimizer and scheduler, then build them afresh
and load the checkpoint (the scheduler's step count jumps from 1 to N + 1: by one, as
a step moves it, when N is 1) and train 10 more. A loaded scheduler has not stepped
before its new optimizer: no scheduler-before-step.
"""

import io
import sys

import torch
from torch import nn

torch.manual_seed(0)
x = torch.randn(256, 8)
y = x.sum(dim=1, keepdim=True)


def build() -> tuple[nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    return model, optimizer, torch.optim.lr_scheduler.StepLR(optimizer, step_size=5, gamma=0.5)


def train(
    model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler, steps: range
) -> None:
    for step in steps:
        xb, yb = x[(step * 32) % 256 :][:32], y[(step * 32) % 256 :][:32]
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(xb), yb)
        loss.backward()
        optimizer.step()
        scheduler.step()
    print(f"step {steps[-1]}: loss {loss.item():.6f}, lr {scheduler.get_last_lr()[0]}")


saved_after = int(sys.argv[1])
model, optimizer, scheduler = build()
train(model, optimizer, scheduler, range(saved_after))
checkpoint = io.BytesIO()
torch.save(
    {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, checkpoint
)
checkpoint.seek(0)

model, optimizer, scheduler = build()
state = torch.load(checkpoint)
model.load_state_dict(state["model"])
optimizer.load_state_dict(state["optimizer"])
scheduler.load_state_dict(state["scheduler"])
train(model, optimizer, scheduler, range(saved_after, saved_after + 10))

"""A seeded loop for diffing runs: --lr-change-at N changes the lr from step N on;
--zero-grad-last moves zero_grad() from before backward() to after step()."""

import argparse

import torch
from torch import nn

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=12)
parser.add_argument("--lr-change-at", type=int, default=-1)
parser.add_argument("--zero-grad-last", action="store_true")
args = parser.parse_args()

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 1))
optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
x, y = torch.randn(64, 6), torch.randn(64, 1)
for step in range(args.steps):
    if step == args.lr_change_at:
        for group in optimizer.param_groups:
            group["lr"] = 0.2
    if not args.zero_grad_last:
        optimizer.zero_grad()
    loss = nn.functional.mse_loss(model(x), y)
    loss.backward()
    optimizer.step()
    if args.zero_grad_last:
        optimizer.zero_grad()
print(f"final loss {loss.item():.6f}")

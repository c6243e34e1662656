"""Correct loop: GradScaler skips the very first steps (the initial scale overflows, as
fp16 training often does), with an lr scheduler stepped every iteration after them.

PyTorch itself warns here ("lr_scheduler.step() before optimizer.step()"), because
the skipped steps never reached the optimizer; the order in the loop is right, so
stepdbg must stay silent. A hook makes the backward overflow on steps 0 and 1.
"""

import warnings

import torch
from torch import nn

warnings.filterwarnings("ignore", r"Detected call of `lr_scheduler.step\(\)` before")
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 1))
x = torch.randn(256, 8)
y = x.sum(dim=1, keepdim=True)
optimizer = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1 + step))
scaler = torch.amp.GradScaler("cpu")
for step in range(20):
    xb, yb = x[(step * 32) % 256 :][:32], y[(step * 32) % 256 :][:32]
    optimizer.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        hidden = model[1](model[0](xb))
        if step < 2:
            hidden.register_hook(lambda g: torch.full_like(g, float("inf")))
        out = model[2](hidden)
    loss = nn.functional.mse_loss(out.float(), yb)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
print(f"final loss {loss.item():.6f}")

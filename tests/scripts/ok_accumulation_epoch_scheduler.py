"""Correct: gradient accumulation over 4 batches, 10 batches an epoch, and an lr scheduler
stepped once per epoch (torchvision's and timm's recipes step per epoch).

    python ok_accumulation_epoch_scheduler.py carry|clear

An epoch ends with 2 batches accumulated and no step: the scheduler steps while their
gradients wait. ``carry`` lets them carry on into the next epoch's first step; ``clear``
clears them at the start of each epoch. Neither is a misplaced scheduler (the step that
follows comes after more backward passes). Expected: no anomaly.
"""

import sys

import torch
from torch import nn

carry = sys.argv[1:] != ["clear"]
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.8)
x = torch.randn(80, 8)
y = x.sum(dim=1, keepdim=True)
for _epoch in range(4):
    if not carry:
        optimizer.zero_grad()
    for batch in range(10):
        at = batch * 8
        loss = nn.functional.mse_loss(model(x[at : at + 8]), y[at : at + 8]) / 4
        loss.backward()
        if batch % 4 == 3:
            optimizer.step()
            optimizer.zero_grad()
    scheduler.step()
print(f"final loss {loss.item():.6f}")

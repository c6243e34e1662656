"""Correct loop: fine-tuning a head on a frozen backbone.

The backbone is frozen with requires_grad_(False) but stays in the optimizer as its
own param group (ready to be unfrozen later); the head trains with CosineAnnealingLR.
Frozen parameters get no gradient: that is not an unused parameter.
"""

import torch
from torch import nn


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU())
        self.head = nn.Linear(32, 1)

    def forward(self, x):
        return self.head(self.backbone(x))


torch.manual_seed(0)
model = Net()
model.backbone.requires_grad_(False)
x = torch.randn(256, 8)
y = x.sum(dim=1, keepdim=True)
steps = 30
optimizer = torch.optim.AdamW(
    [{"params": model.backbone.parameters(), "lr": 1e-4}, {"params": model.head.parameters(), "lr": 1e-2}]
)
scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
for step in range(steps):
    xb, yb = x[(step * 32) % 256 :][:32], y[(step * 32) % 256 :][:32]
    optimizer.zero_grad()
    loss = nn.functional.mse_loss(model(xb), yb)
    loss.backward()
    optimizer.step()
    scheduler.step()
print(f"final loss {loss.item():.6f}")

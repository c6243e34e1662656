"""Correct loop: reentrant activation checkpointing.

With use_reentrant=True each checkpointed block recomputes its forward and runs a
nested backward inside the outer one: still one backward pass per step.
"""

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Linear(8, 32)
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(32, 32), nn.ReLU()) for _ in range(2))
        self.head = nn.Linear(32, 1)

    def forward(self, x):
        h = self.stem(x)  # requires grad, so the reentrant checkpoints pass gradients on
        for block in self.blocks:
            h = checkpoint(block, h, use_reentrant=True)
        return self.head(h)


torch.manual_seed(0)
model = Net()
x = torch.randn(256, 8)
y = x.sum(dim=1, keepdim=True)
optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
for step in range(30):
    xb, yb = x[(step * 32) % 256 :][:32], y[(step * 32) % 256 :][:32]
    optimizer.zero_grad()
    loss = nn.functional.mse_loss(model(xb), yb)
    loss.backward()
    optimizer.step()
print(f"final loss {loss.item():.6f}")

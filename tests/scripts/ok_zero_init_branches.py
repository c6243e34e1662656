"""Correct loop: residual branches scaled by a learned factor that starts at zero (ReZero;
LayerScale and adaLN-Zero do the same with tiny or zero factors), and a zero-init head.

At first the branches' layers get gradients a million times smaller than the rest,
or none; AdamW moves them normally all the same, and the factors grow. Run with
--every 1: per-parameter norms and update sizes on every step.
"""

import torch
from torch import nn


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.f = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 32))
        self.alpha = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return x + self.alpha * self.f(x)


torch.manual_seed(0)
model = nn.Sequential(nn.Linear(8, 32), *[Block() for _ in range(6)], nn.Linear(32, 1))
nn.init.zeros_(model[-1].weight)
nn.init.zeros_(model[-1].bias)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / 20))
x = torch.randn(256, 8)
y = (x**2).sum(dim=1, keepdim=True)
for _step in range(40):
    optimizer.zero_grad()
    loss = nn.functional.mse_loss(model(x), y)
    loss.backward()
    optimizer.step()
    scheduler.step()
print(f"final loss {loss.item():.6f}")

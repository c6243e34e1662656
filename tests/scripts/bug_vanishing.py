"""Bug: a 20-layer sigmoid MLP: the first layers' gradients vanish.

Each sigmoid scales the backward signal by at most 1/4, so the first layer gets
gradients many orders of magnitude below the last one's. Run with --every 1
(per-parameter norms on every step). Expected: vanishing-grad at step 2 (3 detail steps in a row), optimizer 0,
param layers.0.weight.
"""

import torch
from torch import nn


class Deep(nn.Module):
    def __init__(self, depth: int = 20, width: int = 16) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(width, width, bias=False) for _ in range(depth))
        self.out = nn.Linear(width, 1)

    def forward(self, x):
        for layer in self.layers:
            x = torch.sigmoid(layer(x))
        return self.out(x)


torch.manual_seed(0)
model = Deep()
x = torch.randn(320, 16)
y = x.sum(dim=1, keepdim=True)
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
for step in range(10):
    xb, yb = x[step * 32 :][:32], y[step * 32 :][:32]
    optimizer.zero_grad()
    loss = nn.functional.mse_loss(model(xb), yb)
    loss.backward()
    optimizer.step()
print(f"final loss {loss.item():.6f}")

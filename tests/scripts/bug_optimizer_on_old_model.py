"""Bug: the optimizer is built on a model that is then built again (to load a checkpoint).

The loop trains the new model; the optimizer holds the first one's parameters,
which get no gradient, and nothing moves. Expected: unused-param at step 19
(--patience 20), optimizer 0, saying no parameter of the optimizer gets gradients;
param0 (the first model is gone, and its names with it).
"""

import torch
from torch import nn


def build() -> nn.Module:
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 1))


torch.manual_seed(0)
model = build()
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
checkpoint = model.state_dict()
model = build()  # BUG: the optimizer still holds the first model's parameters
model.load_state_dict(checkpoint)
x = torch.randn(256, 8)
y = x.sum(dim=1, keepdim=True)
for step in range(25):
    xb, yb = x[(step * 32) % 256 :][:32], y[(step * 32) % 256 :][:32]
    optimizer.zero_grad()
    model.zero_grad()
    loss = nn.functional.mse_loss(model(xb), yb)
    loss.backward()
    optimizer.step()
print(f"final loss {loss.item():.6f}")

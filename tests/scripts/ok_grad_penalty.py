"""Correct loop: a gradient penalty (as in WGAN-GP).

torch.autograd.grad(create_graph=True) computes the input gradient first (it
fills no .grad), then one backward on loss + penalty fills the gradients.
"""

import torch
from torch import nn

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 1))
x = torch.randn(256, 8)
y = x.sum(dim=1, keepdim=True)
optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
for step in range(30):
    xb = x[(step * 32) % 256 :][:32].clone().requires_grad_(True)
    yb = y[(step * 32) % 256 :][:32]
    optimizer.zero_grad()
    out = model(xb)
    (input_grad,) = torch.autograd.grad(out.sum(), xb, create_graph=True)
    penalty = ((input_grad.norm(dim=1) - 1.0) ** 2).mean()
    loss = nn.functional.mse_loss(out, yb) + 0.1 * penalty
    loss.backward()
    optimizer.step()
print(f"final loss {loss.item():.6f}")

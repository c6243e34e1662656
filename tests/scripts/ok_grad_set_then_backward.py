"""Correct loop: part of the gradient set by hand, the rest backpropagated on top of it.

Each iteration computes the regularizer's gradient with autograd.grad and assigns it
(p.grad = g: fresh tensors, last step's gradients are let go), then backward adds the
data loss's gradient to it, then the step. No zero_grad is needed, and none is missing.
"""

import torch
from torch import nn

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
params = list(model.parameters())
x, y = torch.randn(32, 4), torch.randn(32, 1)
for _step in range(20):
    out = model(x)
    penalty = 1e-3 * sum((p**2).sum() for p in params)
    for p, grad in zip(params, torch.autograd.grad(penalty, params)):
        p.grad = grad
    loss = nn.functional.mse_loss(out, y)
    loss.backward()
    optimizer.step()
print(f"final loss {loss.item():.6f}")

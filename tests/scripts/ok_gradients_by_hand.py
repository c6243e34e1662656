"""Correct loop: the gradients are set by hand, not by a backward into ``.grad``.

    python ok_gradients_by_hand.py [per-sample|copy]

``per-sample``: DP-SGD as Opacus does it, by hand: per-sample gradients from
``torch.func`` (``vmap(grad(...))``), each clipped, averaged, noised and assigned
with ``p.grad = g`` after ``optimizer.zero_grad()``. ``copy``: gradients from
``torch.autograd.grad`` copied into ``.grad`` buffers that
``zero_grad(set_to_none=False)`` keeps. No backward fills ``.grad``, yet every step
gets fresh gradients: no step-without-backward.
"""

import math
import os
import sys

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

mode = sys.argv[1] if len(sys.argv) > 1 else "per-sample"
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
x = torch.randn(256, 8)
y = x.sum(dim=1, keepdim=True)


def sample_loss(params: dict, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    return nn.functional.mse_loss(functional_call(model, params, (xs.unsqueeze(0),)), ys.unsqueeze(0))


grad_norms = []
for step in range(20):
    xb, yb = x[(step * 32) % 256 :][:32], y[(step * 32) % 256 :][:32]
    if mode == "per-sample":
        params = {name: p.detach() for name, p in model.named_parameters()}
        per_sample = vmap(grad(sample_loss), in_dims=(None, 0, 0))(params, xb, yb)
        optimizer.zero_grad()
        for name, p in model.named_parameters():
            g = per_sample[name]
            scale = g.flatten(1).norm(dim=1).clamp(min=1.0).view(-1, *[1] * (g.dim() - 1))
            p.grad = (g / scale).mean(0) + 0.01 * torch.randn_like(p)
    else:
        loss = nn.functional.mse_loss(model(xb), yb)
        grads = torch.autograd.grad(loss, list(model.parameters()))
        optimizer.zero_grad(set_to_none=False)
        for p, g in zip(model.parameters(), grads):
            if p.grad is None:
                p.grad = g.clone()
            else:
                p.grad.copy_(g)
    grad_norms.append(math.sqrt(sum(float(p.grad.double().pow(2).sum()) for p in model.parameters())))
    optimizer.step()
print(f"final weight sum {sum(float(p.sum()) for p in model.parameters()):.6f}")
if os.environ.get("STEPDBG_TEST_OUT"):
    torch.save(
        {"model": model.state_dict(), "rng": torch.get_rng_state(), "grad_norms": grad_norms},
        os.environ["STEPDBG_TEST_OUT"],
    )

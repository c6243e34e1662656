"""Correct loops with torch.compile. The aot_eager backend needs no C++ compiler.

Modes:
- ``compiled-step``: a compiled model and a compiled optimizer step (PyTorch's
  "Compiling the optimizer" recipe);
- ``backward-inside``: forward, loss and ``loss.backward()`` in one compiled function;
- ``compiled-autograd``: the same, with compiled autograd capturing the backward
  (``torch._dynamo.config.compiled_autograd``, as in its tutorial).

stepdbg must record every step, with its backward pass, loss and the gradients the
step consumed, and Dynamo must never trace stepdbg's own hooks (no warnings, no
recompiles, no steps or backward passes seen only at trace time).
"""

import math
import os
import sys

import torch
from torch import nn

mode = sys.argv[1]
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 1))
optimizer = torch.optim.AdamW(model.parameters(), lr=torch.tensor(1e-2))
x = torch.randn(64, 8)
y = x.sum(dim=1, keepdim=True)

if mode == "compiled-step":
    compiled_model = torch.compile(model, backend="aot_eager")

    def forward_backward() -> torch.Tensor:
        loss = nn.functional.mse_loss(compiled_model(x), y)
        loss.backward()
        return loss

    @torch.compile(backend="aot_eager")
    def optimizer_step() -> None:
        optimizer.step()

else:
    torch._dynamo.config.compiled_autograd = mode == "compiled-autograd"

    @torch.compile(backend="aot_eager")
    def forward_backward() -> torch.Tensor:
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    optimizer_step = optimizer.step

grad_norms, losses = [], []
for _step in range(12):
    optimizer.zero_grad()
    loss = forward_backward()
    losses.append(loss.item())
    grad_norms.append(math.sqrt(sum(float(p.grad.double().pow(2).sum()) for p in model.parameters())))
    optimizer_step()
print(f"final loss {loss.item():.6f}")
if os.environ.get("STEPDBG_TEST_OUT"):
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "rng": torch.get_rng_state(),
            "grad_norms": grad_norms,
            "losses": losses,
        },
        os.environ["STEPDBG_TEST_OUT"],
    )

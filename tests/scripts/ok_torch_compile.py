"""Correct loop: a compiled model and a compiled optimizer step (PyTorch's
"Compiling the optimizer" recipe). The aot_eager backend needs no C++ compiler.

stepdbg must record every step with the gradients the compiled step consumed,
and Dynamo must never trace stepdbg's own hooks (no warnings, no recompiles).
"""

import math
import os

import torch
from torch import nn

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 1))
compiled_model = torch.compile(model, backend="aot_eager")
optimizer = torch.optim.AdamW(model.parameters(), lr=torch.tensor(1e-2))


@torch.compile(backend="aot_eager")
def optimizer_step() -> None:
    optimizer.step()


x = torch.randn(64, 8)
y = x.sum(dim=1, keepdim=True)
grad_norms = []
for step in range(12):
    optimizer.zero_grad()
    loss = nn.functional.mse_loss(compiled_model(x), y)
    loss.backward()
    grad_norms.append(math.sqrt(sum(float(p.grad.double().pow(2).sum()) for p in model.parameters())))
    optimizer_step()
print(f"final loss {loss.item():.6f}")
if os.environ.get("STEPDBG_TEST_OUT"):
    torch.save(
        {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "rng": torch.get_rng_state(), "grad_norms": grad_norms},
        os.environ["STEPDBG_TEST_OUT"],
    )

"""Correct loop: AMP on CPU with torch.autocast(bfloat16) and GradScaler("cpu").

On steps 5 and 17 a hook makes the backward pass overflow (as fp16 would), so
GradScaler finds inf gradients, skips optimizer.step() and halves its scale:
stepdbg must record those steps as ``skipped: true`` and find nothing wrong.
The script measures each step's unscaled global gradient norm in float64
(None for skipped steps) and, with STEPDBG_TEST_OUT set, saves it and the final
state there.
"""

import math
import os

import torch
from torch import nn

OVERFLOW_STEPS = {5, 17}
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 1))
x = torch.randn(256, 8)
y = x.sum(dim=1, keepdim=True)
optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
grad_norms = []
for step in range(30):
    xb, yb = x[(step * 32) % 256 :][:32], y[(step * 32) % 256 :][:32]
    optimizer.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        hidden = model[1](model[0](xb))
        if step in OVERFLOW_STEPS:
            hidden.register_hook(lambda g: torch.full_like(g, float("inf")))
        out = model[2](hidden)
    loss = nn.functional.mse_loss(out.float(), yb)
    scaler.scale(loss).backward()
    scale = scaler.get_scale()
    norm = math.sqrt(sum(float(p.grad.double().pow(2).sum()) for p in model.parameters())) / scale
    grad_norms.append(norm if math.isfinite(norm) else None)
    scaler.step(optimizer)
    scaler.update()
print(f"final loss {loss.item():.6f} scale {scaler.get_scale():g}")
if os.environ.get("STEPDBG_TEST_OUT"):
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "rng": torch.get_rng_state(),
            "grad_norms": grad_norms,
        },
        os.environ["STEPDBG_TEST_OUT"],
    )

"""Correct loop on CUDA, for `test_cuda`: plain fp32 or fp16 AMP with GradScaler.

    python cuda_loop.py plain|amp

The loop itself never syncs the device, and runs under
``torch.cuda.set_sync_debug_mode("error")``: a host sync inside stepdbg's hooks
would raise there (and stepdbg would report an internal error). The script
keeps each step's unscaled global gradient norm as a device tensor (computed
in float64) and reads them all after the loop; with STEPDBG_TEST_OUT set it
saves them (None for the steps GradScaler skipped), the final parameters, and
in ``plain`` mode each backward's device time, from its own CUDA events. In that
mode each backward also runs a large matrix product (thrown away), so that the
device, not the host, sets its pace: on a loop this small the device otherwise
idles between kernels, and the script's events, which enclose stepdbg's hooks,
would time the host's work in them (one step in 25 was off by 0.45 ms on an H200).
"""

import os
import sys

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS: runs compare bit for bit

import torch
from torch import nn

torch.use_deterministic_algorithms(True)
MODE = sys.argv[1]


class DeviceBound(torch.autograd.Function):
    """The identity, whose backward also keeps the device busy for milliseconds."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        torch.mm(WORK, WORK)
        return grad


OVERFLOW_STEPS = {6, 13}
STEPS = 25
torch.manual_seed(0)
device = torch.device("cuda")
model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1)).to(device)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=10)
scaler = torch.amp.GradScaler("cuda", init_scale=2.0**10) if MODE == "amp" else None
WORK = torch.ones(8192, 8192, device=device) if MODE == "plain" else None
x = torch.randn(512, 16, device=device)
y = x.sum(dim=1, keepdim=True)
norms = []
backward_events = []
torch.cuda.synchronize()
torch.cuda.set_sync_debug_mode("error")
for step in range(STEPS):
    xb, yb = x[(step * 32) % 512 :][:32], y[(step * 32) % 512 :][:32]
    optimizer.zero_grad()
    with torch.autocast("cuda", dtype=torch.float16, enabled=scaler is not None):
        hidden = model[:2](xb)
        if WORK is not None:
            hidden = DeviceBound.apply(hidden)
        if scaler is not None and step in OVERFLOW_STEPS:
            hidden.register_hook(lambda g: torch.full_like(g, float("inf")))
        out = model[2:](hidden)
    loss = nn.functional.mse_loss(out.float(), yb)
    if scaler is None:
        started, ended = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        started.record()
        loss.backward()
        ended.record()
        backward_events.append((started, ended))
        norms.append(torch.linalg.vector_norm(torch.stack([p.grad.double().norm() for p in model.parameters()])))
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        total = torch.linalg.vector_norm(torch.stack([p.grad.double().norm() for p in model.parameters()]))
        norms.append(total / scaler._scale.double())
        torch.cuda.set_sync_debug_mode("default")  # GradScaler.step reads found_inf on the host
        scaler.step(optimizer)
        scaler.update()
        torch.cuda.set_sync_debug_mode("error")
    scheduler.step()
torch.cuda.set_sync_debug_mode("default")
values = [float(n) for n in norms]
print(f"final loss {loss.item():.6f}")
if os.environ.get("STEPDBG_TEST_OUT"):
    torch.save(
        {
            "grad_norms": [v if v == v and abs(v) != float("inf") else None for v in values],
            "model": {k: v.cpu() for k, v in model.state_dict().items()},
            "backward_seconds": [a.elapsed_time(b) / 1000 for a, b in backward_events],
        },
        os.environ["STEPDBG_TEST_OUT"],
    )

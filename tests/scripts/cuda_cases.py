"""Loops on CUDA for `test_cuda`: correct ones stepdbg stays silent on, bugs it names.

    python cuda_cases.py MODE

Correct loops:
  bf16_fused    bf16 autocast, fused AdamW, OneCycleLR, clip_grad_norm_
  accumulate    gradient accumulation over 4 micro-batches
  compile       a torch.compile'd model
  graphs        the whole step captured in a CUDA graph, then replayed (stepdbg
                sees the warm-up and capture iterations only: a replay runs no Python)
  ddp           DistributedDataParallel over NCCL, one rank
  dataloader    batches from a DataLoader over tensors on the device (its fetches timed
                with events)
Bugs (expected: rule at step):
  missing_zero_grad      missing-zero-grad at 1
  zero_grad_before_step  zero-grad-before-step at 0 (set_to_none=False, then clipping)
  nonfinite              nonfinite at 5 (a NaN input row from step 5 on)
  ddp_bucket_view        missing-zero-grad (DDP's gradient_as_bucket_view, no zero_grad)

The loop's own code never syncs the device and runs under
``torch.cuda.set_sync_debug_mode("error")`` (not the compile, DDP and graph modes:
compiling, NCCL's set-up and graph capture sync on their own): a host sync inside
stepdbg's hooks raises there. Prints the final loss and a checksum of the parameters, read after
the loop, so a traced run's stdout equals the bare run's bit for bit.
"""

import os
import sys
import tempfile

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS: runs compare bit for bit
# Every run compiles afresh: one served from the cache that an earlier run filled skips
# Inductor's warnings, and its stderr would differ from that run's.
os.environ.setdefault("TORCHINDUCTOR_FORCE_DISABLE_CACHES", "1")

import torch
import torch.distributed as dist
from torch import nn

MODE = sys.argv[1]
STEPS = 12
torch.use_deterministic_algorithms(True)
torch.manual_seed(0)
device = torch.device("cuda", 0)
model: nn.Module = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1)).to(
    device
)
x = torch.randn(512, 16, device=device)
y = x.sum(dim=1, keepdim=True)
if MODE == "nonfinite":
    x[5 * 32] = float("nan")  # the batch of step 5 holds a NaN row
batches = [(x[(s * 32) % 512 :][:32], y[(s * 32) % 512 :][:32]) for s in range(STEPS)]


def mse(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return nn.functional.mse_loss(model(inputs).float(), targets)


def bf16_fused() -> torch.Tensor:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-2, total_steps=STEPS)
    for xb, yb in batches:
        optimizer.zero_grad()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = mse(xb, yb)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
    return loss


def accumulate() -> torch.Tensor:
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
    for s, (xb, yb) in enumerate(batches):
        loss = mse(xb, yb) / 4
        loss.backward()
        if s % 4 == 3:
            optimizer.step()
            optimizer.zero_grad()
    return loss


def dataloader() -> torch.Tensor:
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2)
    data = torch.utils.data.TensorDataset(x[: STEPS * 32], y[: STEPS * 32])  # indexed and stacked on the device
    for xb, yb in torch.utils.data.DataLoader(data, batch_size=32):
        optimizer.zero_grad()
        loss = mse(xb, yb)
        loss.backward()
        optimizer.step()
    return loss


def compiled() -> torch.Tensor:
    global model
    model = torch.compile(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for xb, yb in batches:
        optimizer.zero_grad()
        loss = mse(xb, yb)
        loss.backward()
        optimizer.step()
    return loss


def graphs() -> torch.Tensor:
    """PyTorch's whole-network capture recipe (CUDA semantics, "Whole-network capture")."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, capturable=True)
    static_x, static_y = batches[0][0].clone(), batches[0][1].clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            optimizer.zero_grad(set_to_none=True)
            mse(static_x, static_y).backward()
            optimizer.step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    optimizer.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        static_loss = mse(static_x, static_y)
        static_loss.backward()
        optimizer.step()
    for xb, yb in batches:
        static_x.copy_(xb)
        static_y.copy_(yb)
        graph.replay()
    return static_loss


def missing_zero_grad() -> torch.Tensor:
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    for xb, yb in batches:
        loss = mse(xb, yb)
        loss.backward()
        optimizer.step()
    return loss


def zero_grad_before_step() -> torch.Tensor:
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2)
    for xb, yb in batches:
        loss = mse(xb, yb)
        loss.backward()
        optimizer.zero_grad(set_to_none=False)  # wipes the gradients just computed
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    return loss


def nonfinite() -> torch.Tensor:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for xb, yb in batches:
        optimizer.zero_grad()
        loss = mse(xb, yb)
        loss.backward()
        optimizer.step()
    return loss


def ddp(bucket_view: bool) -> torch.Tensor:
    global model
    store, store_path = tempfile.mkstemp()
    os.close(store)
    dist.init_process_group("nccl", init_method=f"file://{store_path}", rank=0, world_size=1, device_id=device)
    model = nn.parallel.DistributedDataParallel(model, device_ids=[0], gradient_as_bucket_view=bucket_view)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for xb, yb in batches:
        if not bucket_view:  # the bug: zero_grad forgotten
            optimizer.zero_grad()
        loss = mse(xb, yb)
        loss.backward()
        optimizer.step()
    dist.destroy_process_group()
    os.remove(store_path)
    return loss


LOOPS = {
    "bf16_fused": bf16_fused,
    "accumulate": accumulate,
    "compile": compiled,
    "graphs": graphs,
    "ddp": lambda: ddp(bucket_view=False),
    "missing_zero_grad": missing_zero_grad,
    "zero_grad_before_step": zero_grad_before_step,
    "nonfinite": nonfinite,
    "ddp_bucket_view": lambda: ddp(bucket_view=True),
    "dataloader": dataloader,
}
checks_syncs = MODE not in ("compile", "graphs", "ddp", "ddp_bucket_view")
torch.cuda.synchronize()
if checks_syncs:
    torch.cuda.set_sync_debug_mode("error")
final = LOOPS[MODE]()
torch.cuda.set_sync_debug_mode("default")
checksum = sum(p.detach().double().sum() for p in model.parameters())
print(f"final loss {final.item():.8f} checksum {checksum.item():.12e}")

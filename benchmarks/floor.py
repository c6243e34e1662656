"""The floor under stepdbg's overhead: the least any recorder can do at its hook points.

    python benchmarks/floor.py [KIND] [--rounds 8] [--block 500]

A recorder of a dozen lines hooks the same calls stepdbg does (the global optimizer
step pre/post hooks, ``Optimizer.zero_grad``, the autograd engine entry) and does at
each only what a per-step trace cannot do without: a clock read at each call, the loss
read at each backward, the exact global gradient norm before the step (the same two
torch calls as `stepdbg.norms.flat_norm`, and a read), the step's lrs, the memory read
(`stepdbg.memory.MemoryGauge`), and a dict queued for a writer. No state for rules, no
schedulers, no spans, no rules. Its time inside its hooks is measured as stepdbg's is,
in blocks alternated with bare ones in one process, as ``overhead.py --in-process``
runs them: once with the norm and once without, so that the norm's share shows.

What it prints is where stepdbg's budgets stand against what the hook points and the
norm alone cost on this machine: stepdbg's own figures come from ``overhead.py``.
"""

from __future__ import annotations

import argparse
import collections
import statistics
import time
from typing import Any

import torch
from loops import KINDS, build, time_steps
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

import stepdbg.memory

TRACED_WARMUP = 20


class FloorRecorder:
    """Records per step what a trace needs at the least (see the module's docstring)."""

    def __init__(self, norm: bool) -> None:
        self.norm = norm
        self.clock = time.perf_counter
        self.memory = stepdbg.memory.MemoryGauge()
        self.records: collections.deque[dict[str, Any]] = collections.deque(maxlen=1000)
        self.in_hooks: list[float] = []
        self._spent = 0.0
        self._times: dict[str, float] = {}
        self._loss: float | None = None
        self._grad_norm: float | None = None
        self._undo: list[Any] = []

    def zero_grad_started(self) -> None:
        now = self.clock()
        self._times["zero_grad"] = now
        self._spent += self.clock() - now

    def zero_grad_ended(self) -> None:
        now = self.clock()
        self._times["zero_grad_end"] = now
        self._spent += self.clock() - now

    def backward_started(self, outputs: Any) -> None:
        now = self.clock()
        loss = outputs[0] if isinstance(outputs, (tuple, list)) and len(outputs) == 1 else None
        self._loss = loss.item() if isinstance(loss, torch.Tensor) and loss.numel() == 1 else None
        self._times["backward"] = end = self.clock()
        self._spent += end - now

    def backward_ended(self) -> None:
        now = self.clock()
        self._times["backward_end"] = now
        self._spent += self.clock() - now

    def step_started(self, optimizer: torch.optim.Optimizer) -> None:
        now = self.clock()
        if self.norm:
            grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            grad_mode = torch.is_grad_enabled()
            torch._C._set_grad_enabled(False)
            flat = torch._C._nn.flatten_dense_tensors(grads)
            self._grad_norm = torch.linalg.vector_norm(flat).item()
            torch._C._set_grad_enabled(grad_mode)
        self._times["step"] = end = self.clock()
        self._spent += end - now

    def step_ended(self, optimizer: torch.optim.Optimizer) -> None:
        now = self.clock()
        record = {
            "loss": self._loss,
            "grad_norm": self._grad_norm,
            "lr": [group["lr"] for group in optimizer.param_groups],
            "time": dict(self._times),
            "memory": self.memory.read(),
        }
        self._spent += self.clock() - now
        record["overhead"] = self._spent
        self.in_hooks.append(self._spent)
        self._spent = 0.0
        self.records.append(record)

    def __enter__(self) -> FloorRecorder:
        import torch.autograd.graph as graph

        zero_grad, engine = torch.optim.Optimizer.zero_grad, graph._engine_run_backward

        def clearing(optimizer: Any, *args: Any, **kwargs: Any) -> Any:
            self.zero_grad_started()
            try:
                return zero_grad(optimizer, *args, **kwargs)
            finally:
                self.zero_grad_ended()

        def backward(outputs: Any, *args: Any, **kwargs: Any) -> Any:
            self.backward_started(outputs)
            try:
                return engine(outputs, *args, **kwargs)
            finally:
                self.backward_ended()

        handles = [
            register_optimizer_step_pre_hook(lambda optimizer, args, kwargs: self.step_started(optimizer)),
            register_optimizer_step_post_hook(lambda optimizer, args, kwargs: self.step_ended(optimizer)),
        ]
        torch.optim.Optimizer.zero_grad = clearing  # type: ignore[method-assign]
        graph._engine_run_backward = torch.autograd._engine_run_backward = backward  # type: ignore[attr-defined]
        self.memory.open()

        def undo() -> None:
            for handle in handles:
                handle.remove()
            torch.optim.Optimizer.zero_grad = zero_grad  # type: ignore[method-assign]
            graph._engine_run_backward = torch.autograd._engine_run_backward = engine  # type: ignore[attr-defined]
            self.memory.close()

        self._undo = [undo]
        return self

    def __exit__(self, *exc: object) -> None:
        for undo in self._undo:
            undo()


def typical(seconds: list[float]) -> float:
    """The lower quartile, as overhead.py takes it."""
    return statistics.quantiles(seconds, n=4)[0]


def measure(kind: str, rounds: int, block: int) -> None:
    loop = build(kind)
    for _ in range(loop.warmup):
        loop.step()
    cpu: dict[str, list[float]] = {"bare": [], "norm": [], "no norm": []}
    bare_steps: list[float] = []
    in_hooks: dict[str, list[float]] = {"norm": [], "no norm": []}
    for number in range(rounds):
        names = ["bare", "norm", "no norm"]
        for name in names if number % 2 == 0 else reversed(names):
            started = time.thread_time()
            if name == "bare":
                _, times = time_steps(loop, block)
                bare_steps.append(typical(times))
            else:
                with FloorRecorder(norm=name == "norm") as recorder:
                    for _ in range(TRACED_WARMUP):
                        loop.step()
                    started = time.thread_time()
                    time_steps(loop, block)
                in_hooks[name].append(typical(recorder.in_hooks[TRACED_WARMUP:]))
            cpu[name].append(time.thread_time() - started)
    bare_step = statistics.median(bare_steps)
    print(f"{kind}: bare step {bare_step * 1e3:.3f} ms (lower quartile, median of {rounds} blocks)")
    print(f"{'floor recorder':22} {'in hooks, µs/step (share)':>26} {'thread CPU (fastest) (median)':>30}")
    for name in ("norm", "no norm"):
        hooks = statistics.median(in_hooks[name])
        fastest = min(cpu[name]) / min(cpu["bare"])
        median = statistics.median(t / b for t, b in zip(cpu[name], cpu["bare"]))
        label = "with the exact norm" if name == "norm" else "without it"
        print(f"{label:22} {hooks * 1e6:17.1f} ({hooks / bare_step:5.1%}) {fastest:17.3f}× {median:9.3f}×")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", nargs="?", default="tiny", choices=[k for k in KINDS if k not in ("two", "loader")])
    parser.add_argument("--rounds", type=int, default=8, help="rounds of bare and floor-recorder blocks")
    parser.add_argument("--block", type=int, default=500, help="iterations a block")
    args = parser.parse_args()
    measure(args.kind, args.rounds, args.block)


if __name__ == "__main__":
    main()

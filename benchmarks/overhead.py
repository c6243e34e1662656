"""stepdbg's overhead on real training loops, with default options.

    python benchmarks/overhead.py [--repeats 3] [--kinds KIND ...] [--in-process KIND ...]
                                  [--rounds 10] [--block N] [--device cuda] [--profiler]

The primary figure is stepdbg's own time inside its hooks, per step, and its share of
the bare step: read from the traces (``time.overhead``), it stays steady where
whole-loop ratios swing with the machine's load. Per-step figures are `typical`: the
lower quartile of the steps' times, the step as it runs when nothing interrupts it
(on a shared machine, more than half the steps can be). Two ways of running the loops
(`loops`) give it, with the whole-loop ratios beside it:

- In fresh processes (``--kinds``, default all of them): bare runs and ``stepdbg run``
  runs (``--profiler``: torch.profiler runs too) alternate, ``--repeats`` times each,
  so that the machine's drift hits all of them alike. Each loop times itself after a
  warm-up (start-up and imports are not counted). Ratios: of the fastest runs (the
  least noisy estimate on a busy machine) and of the medians.
- In one process (``--in-process``, default tiny): blocks of ``--block`` bare steps (500, or
  the loop's own count where smaller: medium's 40) and
  blocks of as many steps under ``stepdbg.trace()`` alternate, ``--rounds`` pairs, the
  order swapped every round. The same process, heap and caches for both: steadier still.
  Besides the wall clock, the training thread's CPU time per block, which does not
  count the time the thread waited for a core on a shared machine.

Then, in this process, what the data and memory instrumentation costs by itself:
the hook around each DataLoader fetch (on a fetch that does nothing, so that only
the hook is timed) and each step's memory read, in microseconds a call.

glibc's malloc is pinned (no trimming; no mmap for blocks below 32 MiB, the largest
threshold it takes) for every run, bare ones included, in fresh processes through its
environment variables and in one process through ``mallopt``: by default it hands freed
multi-MB blocks back to the OS and faults them in again at the next step, as the heap's
layout happens to fall, which made the medium loop's bare runs vary by 20% and more.
``--system-malloc`` keeps the default behaviour.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from loops import KINDS, STEPS_PER_ITERATION, WARMUP, Loop, build, time_steps

LOOPS = Path(__file__).with_name("loops.py")
BUDGET = {"tiny": 1.15, "loader": 1.15, "wide": 1.04, "layerwise": 1.04, "medium": 1.03}
"""The whole loop under stepdbg against bare, fastest runs, where a budget is set."""
HOOK_SHARE_BUDGET = {"tiny": 0.08, "loader": 0.08}
"""stepdbg's time in its hooks against the bare step, where a budget is set."""
MMAP_THRESHOLD = 32 << 20
"""The largest threshold glibc takes (half its heap size on 64-bit): it ignores a larger one."""
TRIM_THRESHOLD = 1 << 32
PINNED_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD), "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD)}
TRACED_WARMUP = 20
"""In one process: iterations of each traced block left untimed (the optimizer announced, its layout made)."""
IN_PROCESS_BLOCK = 500
"""Iterations a block in one process, or the loop's own count where smaller (medium: 40)."""
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
"""mallopt's parameters (malloc.h)."""
CALLS = 200_000
"""Calls timed for each of the data and memory pieces."""


def run_loop(command: list[str], env: dict[str, str]) -> dict[str, float]:
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def typical(seconds: list[float]) -> float:
    """The lower quartile: a step's time where the thread was not interrupted."""
    return statistics.quantiles(seconds, n=4)[0] if len(seconds) > 1 else seconds[0]


def hook_seconds(trace: Path, kind: str, skip: int) -> float:
    """`typical` seconds per iteration spent inside stepdbg's hooks, after ``skip`` iterations
    (an iteration's records' ``time.overhead`` together, where it makes several)."""
    with open(trace, encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    per = STEPS_PER_ITERATION.get(kind, 1)
    overheads = [r["time"]["overhead"] for r in records if r["type"] == "step"][skip * per :]
    return typical([sum(overheads[i : i + per]) for i in range(0, len(overheads) - per + 1, per)])


def in_fresh_processes(
    kind: str, repeats: int, folder: Path, env: dict[str, str], device: str, profiler: bool
) -> dict[str, list[float]]:
    trace = folder / f"{kind}.stepdbg.jsonl"
    loop = [str(LOOPS), kind, "--device", device]
    commands = {
        "bare": [sys.executable, *loop],
        "stepdbg": [sys.executable, "-m", "stepdbg", "run", "-o", str(trace), *loop],
    }
    if profiler:
        commands["profiler"] = [sys.executable, *loop, "--profiler"]
    figures: dict[str, list[float]] = {name: [] for name in (*commands, "bare step", "hooks")}
    for _ in range(repeats):
        for name, command in commands.items():
            result = run_loop(command, env)
            figures[name].append(result["seconds_per_step"])
            if name == "bare":
                figures["bare step"].append(result["typical_step"])
        figures["hooks"].append(hook_seconds(trace, kind, skip=WARMUP[kind]))
    return figures


def _block(loop: Loop, steps: int) -> tuple[float, float, float]:
    """Wall seconds, training-thread CPU seconds, and the `typical` step's seconds, over ``steps`` iterations."""
    cpu = time.thread_time()
    wall, times = time_steps(loop, steps)
    return wall, time.thread_time() - cpu, typical(times)


def pin_malloc() -> None:
    """This process's malloc as `PINNED_MALLOC` sets a fresh one's (glibc only)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)


def in_one_process(kind: str, rounds: int, block: int | None, folder: Path, device: str) -> dict[str, list[float]]:
    """Bare and traced blocks of ``kind`` alternating in this process (see the module's docstring)."""
    import stepdbg

    loop = build(kind, device)
    block = block or min(IN_PROCESS_BLOCK, loop.steps)
    for _ in range(loop.warmup):
        loop.step()
    figures: dict[str, list[float]] = {"hooks": []}
    for name in ("bare", "stepdbg"):
        for what in ("wall", "cpu", "step"):
            figures[f"{name} {what}"] = []
    for number in range(rounds):
        for name in ("bare", "stepdbg") if number % 2 == 0 else ("stepdbg", "bare"):
            if name == "bare":
                wall, cpu, step = _block(loop, block)
            else:
                trace = folder / f"{kind}-in-process-{number}.stepdbg.jsonl"
                with stepdbg.trace(trace, live=False, quiet=True):
                    for _ in range(TRACED_WARMUP):
                        loop.step()
                    wall, cpu, step = _block(loop, block)
                figures["hooks"].append(hook_seconds(trace, kind, skip=TRACED_WARMUP))
            figures[f"{name} wall"].append(wall)
            figures[f"{name} cpu"].append(cpu)
            figures[f"{name} step"].append(step)
    return figures


def _share(hooks: float, bare_step: float, kind: str) -> str:
    budget = HOOK_SHARE_BUDGET.get(kind)
    return f"{hooks * 1e3:6.3f} ({hooks / bare_step:4.1%}{f' ≤ {budget:.0%}' if budget else ''})"


def report_processes(kind: str, figures: dict[str, list[float]]) -> str:
    bare_min, bare_median = min(figures["bare"]), statistics.median(figures["bare"])
    fastest = min(figures["stepdbg"]) / bare_min
    median = statistics.median(figures["stepdbg"]) / bare_median
    bare_step = statistics.median(figures["bare step"])
    budget = f"{BUDGET[kind]:.2f}×" if kind in BUDGET else "-"
    line = (
        f"{kind:10} {bare_step * 1e3:12.3f} {_share(statistics.median(figures['hooks']), bare_step, kind):>24}"
        f" {fastest:17.3f}× {median:16.3f}× {budget:>7}"
    )
    if "profiler" in figures:
        line += f" {min(figures['profiler']) / bare_min:14.2f}×"
    return line


def report_one_process(kind: str, figures: dict[str, list[float]]) -> str:
    bare_step = statistics.median(figures["bare step"])
    added = statistics.median(s - b for s, b in zip(figures["stepdbg step"], figures["bare step"]))
    line = (
        f"{kind:10} {bare_step * 1e3:12.3f} {_share(statistics.median(figures['hooks']), bare_step, kind):>24}"
        f" {added * 1e3:13.3f}"
    )
    for what in ("wall", "cpu"):
        bare, traced = figures[f"bare {what}"], figures[f"stepdbg {what}"]
        fastest = min(traced) / min(bare)
        median = statistics.median(t / b for t, b in zip(traced, bare))
        line += f" {fastest:9.3f}× {median:7.3f}×"
    return line


def microseconds_a_call(call: object, arg: object = None) -> float:
    """The fastest of 5 timings of ``CALLS`` calls, in microseconds a call."""
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(CALLS):
            call(arg)  # type: ignore[operator]
        best = min(best, time.perf_counter() - start)
    return best / CALLS * 1e6


def data_and_memory_costs() -> dict[str, float]:
    """Microseconds stepdbg adds to each DataLoader fetch, and takes to read each step's memory."""
    from stepdbg.collector import Collector
    from stepdbg.diagnostics import Diagnostics
    from stepdbg.instrument import Instrumentation
    from stepdbg.module_tree import ModuleTree
    from stepdbg.rules import Thresholds

    collector = Collector(0, Diagnostics(Thresholds(), frozenset(), print), print, print, ModuleTree())
    instrumentation = Instrumentation(collector)
    fetch = instrumentation._wrap_fetch(lambda iterator: None)
    iterator = SimpleNamespace(_num_yielded=1)  # mid-epoch, as nearly every fetch is
    collector.memory.open()
    try:
        costs = {
            "fetch hook": microseconds_a_call(fetch, iterator) - microseconds_a_call(lambda iterator: None, iterator),
            "memory read": microseconds_a_call(lambda _: collector.memory.read()),
        }
    finally:
        collector.memory.close()
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each kind in fresh processes")
    parser.add_argument("--kinds", nargs="*", default=list(KINDS), choices=KINDS, help="loops run in fresh processes")
    parser.add_argument("--in-process", nargs="*", default=["tiny"], choices=KINDS, help="loops run in one process")
    parser.add_argument("--rounds", type=int, default=10, help="in one process: pairs of bare and traced blocks")
    parser.add_argument(
        "--block",
        type=int,
        help=f"in one process: iterations a block (default {IN_PROCESS_BLOCK}, or the loop's own count)",
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the loops train")
    parser.add_argument("--profiler", action="store_true", help="in fresh processes, torch.profiler runs too")
    parser.add_argument("--system-malloc", action="store_true", help="glibc's malloc thresholds left at their defaults")
    args = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "1", **({} if args.system_malloc else PINNED_MALLOC)}
    header = f"{'loop':10} {'bare ms/step':>12} {'in hooks ms/step (share)':>24}"
    with tempfile.TemporaryDirectory() as folder:
        if args.kinds:
            print(f"in fresh processes, {args.repeats} runs each ({args.device})")
            print(
                f"{header} {'stepdbg (fastest)':>18} {'stepdbg (median)':>17} {'budget':>7}"
                + (f" {'torch.profiler':>15}" if args.profiler else "")
            )
            for kind in args.kinds:
                figures = in_fresh_processes(kind, args.repeats, Path(folder), env, args.device, args.profiler)
                print(report_processes(kind, figures), flush=True)
        if args.in_process:
            print(
                f"in one process, {args.rounds} rounds of {args.block or 'up to ' + str(IN_PROCESS_BLOCK)}-step blocks"
                f" ({args.device});"
                " stepdbg against bare: fastest blocks, median round; wall clock, then the training thread's CPU"
            )
            print(
                f"{header} {'added ms/step':>13} {'wall (fastest)':>15} {'(median)':>8} {'CPU (fastest)':>14}"
                f" {'(median)':>8}"
            )
        if args.in_process and not args.system_malloc:
            pin_malloc()
        for kind in args.in_process:
            figures = in_one_process(kind, args.rounds, args.block, Path(folder), args.device)
            print(report_one_process(kind, figures), flush=True)
    costs = data_and_memory_costs()
    fetch, read = costs["fetch hook"], costs["memory read"]
    print(f"data and memory, in this process: {fetch:.2f} µs a fetch, {read:.2f} µs a step")


if __name__ == "__main__":
    main()

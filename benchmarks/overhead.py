"""stepdbg's overhead on real training loops: bare vs `stepdbg run` (default options).

    python benchmarks/overhead.py [--repeats 5] [--kinds tiny loader wide layerwise medium] [--device cuda]

Bare, stepdbg and torch.profiler runs alternate, each a fresh process, so that
the machine's drift hits all of them alike; the loop times itself after a
warm-up (start-up and imports are not counted). Reported: the ratio of the
fastest runs (the least noisy estimate on a busy machine) and of the medians,
and stepdbg's own time inside its hooks, read from the traces (``time.overhead``,
median over the timed steps): on a machine whose speed drifts by tens of percent
from run to run, that direct measurement is the steadier figure.

Then, in this process, what the data and memory instrumentation costs by itself:
the hook around each DataLoader fetch (on a fetch that does nothing, so that only
the hook is timed) and each step's memory read, in microseconds a call.

glibc's malloc is pinned (no trimming, no mmap for large blocks) for every run,
bare ones included: by default it hands freed multi-MB blocks back to the OS and
faults them in again at the next step, as the heap's layout happens to fall, which
made the medium loop's bare runs vary by 20% and more. ``--system-malloc`` keeps
the default behaviour.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from loops import WARMUP

LOOPS = Path(__file__).with_name("loops.py")
BUDGET = {"tiny": 1.05, "loader": 1.05, "wide": 1.05, "layerwise": 1.05, "medium": 1.02}
CALLS = 200_000
PINNED_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(1 << 30), "MALLOC_TRIM_THRESHOLD_": str(1 << 32)}


def seconds_per_step(command: list[str], env: dict[str, str]) -> float:
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    return float(json.loads(result.stdout.strip().splitlines()[-1])["seconds_per_step"])


def hook_seconds(trace: str, skip: int) -> float:
    """Median seconds per step spent inside stepdbg's hooks, after the warm-up steps."""
    with open(trace, encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    overheads = [r["time"]["overhead"] for r in records if r["type"] == "step"][skip:]
    return statistics.median(overheads)


def measure(kind: str, repeats: int, trace_dir: Path, env: dict[str, str], device: str) -> dict[str, list[float]]:
    trace = str(trace_dir / f"{kind}.stepdbg.jsonl")
    loop = [str(LOOPS), kind, "--device", device]
    commands = {
        "bare": [sys.executable, *loop],
        "stepdbg": [sys.executable, "-m", "stepdbg", "run", "-o", trace, *loop],
        "profiler": [sys.executable, *loop, "--profiler"],
    }
    times: dict[str, list[float]] = {name: [] for name in (*commands, "hooks")}
    for _ in range(repeats):
        for name, command in commands.items():
            times[name].append(seconds_per_step(command, env))
        times["hooks"].append(hook_seconds(trace, skip=WARMUP[kind]))
    return times


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
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--kinds", nargs="+", default=list(BUDGET), choices=list(BUDGET))
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the loops train")
    parser.add_argument("--system-malloc", action="store_true", help="leave glibc's malloc thresholds at their defaults")
    args = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "1", **({} if args.system_malloc else PINNED_MALLOC)}
    print(
        f"{'loop':10} {'bare ms/step':>12} {'stepdbg (fastest)':>18} {'stepdbg (median)':>17} {'budget':>7}"
        f" {'in hooks ms/step':>17} {'torch.profiler':>15}"
    )
    with tempfile.TemporaryDirectory() as trace_dir:
        for kind in args.kinds:
            times = measure(kind, args.repeats, Path(trace_dir), env, args.device)
            bare_min, bare_median = min(times["bare"]), statistics.median(times["bare"])
            fastest = min(times["stepdbg"]) / bare_min
            median = statistics.median(times["stepdbg"]) / bare_median
            profiler = min(times["profiler"]) / bare_min
            hooks = statistics.median(times["hooks"])
            print(
                f"{kind:10} {bare_min * 1e3:12.3f} {fastest:17.3f}× {median:16.3f}× {BUDGET[kind]:6.2f}×"
                f" {hooks * 1e3:8.3f} ({hooks / bare_median:4.0%}) {profiler:14.2f}×",
                flush=True,
            )
    costs = data_and_memory_costs()
    fetch, read = costs["fetch hook"], costs["memory read"]
    print(f"data and memory, in this process: {fetch:.2f} µs a fetch, {read:.2f} µs a step")


if __name__ == "__main__":
    main()

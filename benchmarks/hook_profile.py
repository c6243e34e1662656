"""Where stepdbg's time in its hooks goes, piece by piece, on one of the benchmark's loops.

    python benchmarks/hook_profile.py [KIND] [--steps 3000] [--cprofile] [--live]

Runs the loop (`loops`, tiny by default) in this process under a `Session`, as
``stepdbg run`` does, with a timer around each of the collector's entry points (the
hooks) and around the pieces they call, down to the norms, the rules, the trace writer
and the run's output. Prints, per piece, its calls per iteration and the lower quartile and the
median of its time per iteration, in microseconds. Pieces are indented under the piece
that calls them, and their times are part of its. A timer's own cost, measured as the
run starts, is taken off the pieces around it; what is left of it (a piece's own timer
is not taken off) is well under a microsecond a call. What the figures leave out: the wrappers in
`stepdbg.instrument` and PyTorch's hook dispatch around each entry point (the
difference between the overhead benchmark's "added ms/step" and its time in hooks).
Pieces a version of stepdbg does not have are left out. Last, the time stepdbg counts as
its own in the trace (``time.overhead``, which the overhead benchmark reads), for
comparison.

``--cprofile``: cProfile over the same steps instead of the timers, stepdbg's functions
by their own time (cProfile's cost per call inflates many small calls: read the order,
not the figures). ``--live``: the live table is drawn, on a pseudo-terminal.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import sys
import tempfile
import threading
import time
import timeit
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loops import STEPS_PER_ITERATION, build
from overhead import hook_seconds
from rich.console import Console

import stepdbg.collector
import stepdbg.device_clock
import stepdbg.norms
from stepdbg.existing import adopt_existing
from stepdbg.run_output import RunOutput
from stepdbg.session import RunOptions, Session

PIECES = (
    (0, "collector", "on_zero_grad_start"),
    (1, "collector", "_loop_started"),
    (2, "schedulers", "poll"),
    (0, "collector", "on_zero_grad_end"),
    (1, "collector", "track_for"),
    (1, "gradients", "cleared"),
    (0, "collector", "on_backward_start"),
    (1, "collector_module", "loss_value"),
    (1, "gradients", "backward_starting"),
    (1, "losses", "add"),
    (0, "collector", "on_backward_end"),
    (1, "gradients", "backward_ended"),
    (0, "collector", "on_step_start"),
    (1, "stepping", "begins"),
    (1, "stepping", "start"),
    (2, "records", "begin"),
    (3, "records_module", "_lr"),
    (3, "device_clock", "capturing"),
    (3, "order", "check"),
    (2, "records", "consume"),
    (3, "optimizers", "layout"),
    (3, "losses", "take"),
    (3, "records_module", "_gradient_norms"),
    (4, "norms", "flat_norm"),
    (4, "norms", "per_tensor_norms"),
    (3, "beside", "submit"),
    (3, "gradients", "consumed"),
    (0, "collector", "on_step_end"),
    (1, "stepping", "end"),
    (2, "records", "finish"),
    (3, "records", "_take_beside"),
    (3, "phases", "record_ended"),
    (3, "memory", "read"),
    (3, "norms", "update_pieces"),
    (3, "norms", "read_floats"),
    (3, "records", "_complete"),
    (4, "records", "_emit_step"),
    (5, "writer", "write_step"),
    (5, "output", "on_step"),
    (4, "diagnostics", "check_step"),
    (0, "collector", "on_fetch_start"),
    (0, "collector", "on_fetch_end"),
    (0, "phases", "_span"),
)
"""(depth, owner, name): what is timed, in the order shown (see `_owners`). A piece called
from several hooks (``_span``) is shown last, unindented."""


class Timers:
    """Seconds per iteration and calls, per piece; each piece's seconds without the cost of
    the timers inside it (`cost`, measured as the run starts)."""

    def __init__(self) -> None:
        self.iteration = 0
        self.seconds: dict[str, defaultdict[int, float]] = {}
        self.calls: dict[str, int] = {}
        self.timed = 0
        """Timed calls so far, all pieces together."""
        self.cost = 0.0
        self.cost = self._measure_cost()

    def wrap(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        clock, seconds, calls = time.perf_counter, self.seconds.setdefault(name, defaultdict(float)), self.calls
        calls[name] = 0

        def timed(*args: Any, **kwargs: Any) -> Any:
            before = self.timed
            start = clock()
            try:
                return function(*args, **kwargs)
            finally:
                end = clock()
                seconds[self.iteration] += end - start - (self.timed - before) * self.cost
                calls[name] += 1
                self.timed += 1

        return timed

    def restart(self) -> None:
        """Forget what was timed so far (the warm-up)."""
        for name, per_iteration in self.seconds.items():
            per_iteration.clear()
            self.calls[name] = 0

    def _measure_cost(self) -> float:
        """Seconds a timer adds to a call, on this machine now."""

        def nothing() -> None:
            pass

        timed = self.wrap("(timer)", nothing)
        bare, wrapped = (min(timeit.repeat(f, number=20000, repeat=5)) / 20000 for f in (nothing, timed))
        del self.seconds["(timer)"], self.calls["(timer)"]
        self.timed = 0
        return wrapped - bare

    def report(self, iterations: int, shown: list[tuple[int, str]]) -> list[str]:
        lines = [
            f"(a timer costs {self.cost * 1e6:.2f} µs a call, taken off the pieces around it)",
            f"{'':40} {'calls/it':>8} {'µs/it (q1)':>11} {'(median)':>9}",
        ]
        for depth, name in shown:
            per_iteration = self.seconds[name]
            values = [per_iteration.get(i, 0.0) * 1e6 for i in range(iterations)]
            q1, median = statistics.quantiles(values, n=4)[0], statistics.median(values)
            label = "  " * depth + name
            lines.append(f"{label:40} {self.calls[name] / iterations:8.2f} {q1:11.1f} {median:9.1f}")
        return lines


def _owners(session: Session) -> dict[str, Any]:
    """Where each of `PIECES` is looked up: the session's objects (instance attributes: their
    methods are looked up on them at every call) and the modules whose functions are called
    through the module (module attributes). None where this version has no such object."""
    collector = session.collector
    records = getattr(collector, "records", None)
    return {
        "collector": collector,
        "diagnostics": session.diagnostics,
        "writer": session.recorder.writer,
        "output": session.recorder.output,
        "memory": getattr(collector, "memory", None),
        "records": records,
        "order": getattr(records, "_order", None),
        "beside": getattr(records, "beside", None),
        **{
            name: getattr(collector, name, None)
            for name in ("stepping", "gradients", "losses", "schedulers", "phases", "optimizers")
        },
        "collector_module": stepdbg.collector,
        "records_module": sys.modules.get("stepdbg.collector.records"),
        "device_clock": stepdbg.device_clock,
        "norms": stepdbg.norms,
    }


def _attach(session: Session, timers: Timers) -> list[tuple[int, str]]:
    """Timers around the `PIECES` this version has."""
    owners = _owners(session)
    shown = []
    for depth, owner, name in PIECES:
        target = owners[owner]
        if target is not None and hasattr(target, name):
            label = name if owner in ("collector", "collector_module", "records_module") else f"{owner}.{name}"
            setattr(target, name, timers.wrap(label, getattr(target, name)))
            shown.append((depth, label))
    return shown


def _console(live: bool) -> Console:
    """stderr's console, or with ``live`` a pseudo-terminal's, whose screen a thread reads and
    throws away: the table is drawn as on a terminal."""
    if not live:
        return Console(stderr=True)
    leader, follower = os.openpty()
    terminal = os.fdopen(follower, "w", buffering=1, encoding="utf-8")
    sys.stderr = terminal

    def discard() -> None:
        while os.read(leader, 65536):
            pass

    threading.Thread(target=discard, daemon=True).start()
    return Console(file=terminal, force_terminal=True, width=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", nargs="?", default="tiny")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--cprofile", action="store_true")
    parser.add_argument("--live", action="store_true", help="draw the live table, on a pseudo-terminal")
    args = parser.parse_args()
    loop = build(args.kind)
    for _ in range(loop.warmup):
        loop.step()
    stdout = sys.stdout
    with tempfile.TemporaryDirectory() as folder:
        output = RunOutput(_console(args.live), live=args.live, quiet=not args.live)
        options = RunOptions(target=args.kind, live=args.live, quiet=not args.live)
        trace = Path(folder) / "profile.stepdbg.jsonl"
        session = Session(options, [args.kind], f"hook_profile.py {args.kind}", [trace], output, None)
        session.start()
        adopt_existing(session.tree, session.collector, session.instrumentation)  # the loop was built first
        timers = Timers()
        shown = [] if args.cprofile else _attach(session, timers)
        profile = cProfile.Profile()
        try:
            for _ in range(loop.warmup):
                loop.step()
            timers.restart()
            if args.cprofile:
                profile.enable()
            for iteration in range(args.steps):
                timers.iteration = iteration
                loop.step()
            profile.disable()
        finally:
            session.stop()
            session.end("ok", 0)
        reported = hook_seconds(trace, args.kind, skip=loop.warmup)
    records = STEPS_PER_ITERATION.get(args.kind, 1)
    print(f"{args.kind}: {args.steps} iterations, {records} step records each", file=stdout)
    if args.cprofile:
        pstats.Stats(profile, stream=stdout).sort_stats("tottime").print_stats("stepdbg", 40)
    else:
        print("\n".join(timers.report(args.steps, shown)), file=stdout)
    print(f"the trace's time.overhead, what stepdbg counts as its own: {reported * 1e6:.1f} µs/it (q1)", file=stdout)


if __name__ == "__main__":
    main()

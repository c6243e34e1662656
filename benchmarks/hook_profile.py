"""Where stepdbg's time in its hooks goes, piece by piece, on one of the benchmark's loops.

    python benchmarks/hook_profile.py [KIND] [--steps 3000] [--cprofile] [--live]

Runs the loop (`loops`, tiny by default) in this process under a `Session`, as
``stepdbg run`` does, with a timer around each of the collector's entry points (the
hooks) and around the pieces they call, down to the norms, the rules, the trace writer
and the view. Prints, per piece, its calls per iteration and the lower quartile and the
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
not the figures). ``--live``: the view draws the live table, on a pseudo-terminal.
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
import stepdbg.norms
from stepdbg.existing import adopt_existing
from stepdbg.live import View
from stepdbg.session import RunOptions, Session

PIECES = (
    (0, "collector", "on_zero_grad_start"),
    (1, "collector", "_loop_started"),
    (2, "collector", "_poll_schedulers"),
    (0, "collector", "on_zero_grad_end"),
    (1, "collector", "track_for"),
    (1, "collector", "_cleared"),
    (0, "collector", "on_backward_start"),
    (1, "module", "_loss_value"),
    (0, "collector", "on_backward_end"),
    (0, "collector", "on_step_start"),
    (1, "collector", "_begin_record"),
    (2, "module", "_lr"),
    (2, "module", "capturing"),
    (2, "collector", "_check_step_order"),
    (1, "collector", "_consume"),
    (2, "collector", "_layout"),
    (2, "collector", "_take_losses"),
    (2, "collector", "_gradient_norms"),
    (3, "norms", "flat_norm"),
    (3, "norms", "per_tensor_norms"),
    (2, "collector", "_mark_consumed"),
    (0, "collector", "on_step_end"),
    (1, "collector", "_finish_record"),
    (2, "collector", "_compressed_calls"),
    (2, "collector", "_phase_times"),
    (2, "memory", "read"),
    (2, "norms", "update_pieces"),
    (2, "norms", "read_floats"),
    (2, "collector", "_complete"),
    (3, "diagnostics", "check_step"),
    (3, "collector", "_emit_step"),
    (4, "writer", "write_step"),
    (4, "view", "on_step"),
    (0, "collector", "on_fetch_start"),
    (0, "collector", "on_fetch_end"),
    (0, "collector", "_span"),
)
"""(depth, owner, name): what is timed, in the order shown. Owners: the session's collector,
diagnostics, trace writer, view and memory gauge; the collector's module (its functions);
`stepdbg.norms`.
A piece called from several hooks (``_span``) is shown last, unindented."""


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


def _attach(session: Session, timers: Timers) -> list[tuple[int, str]]:
    """Timers around the `PIECES` this version has: instance attributes for the session's
    objects (methods are looked up on them at every call), module attributes for functions."""
    owners = {
        "collector": session.collector, "diagnostics": session.diagnostics, "writer": session.recorder.writer,
        "view": session.recorder.view, "module": stepdbg.collector, "norms": stepdbg.norms,
        "memory": getattr(session.collector, "memory", None),
    }
    shown = []
    for depth, owner, name in PIECES:
        target = owners[owner]
        if target is not None and hasattr(target, name):
            label = name if owner in ("collector", "module") else f"{owner}.{name}"
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
        view = View(_console(args.live), live=args.live, quiet=not args.live)
        options = RunOptions(target=args.kind, live=args.live, quiet=not args.live)
        trace = Path(folder) / "profile.stepdbg.jsonl"
        session = Session(options, [args.kind], f"hook_profile.py {args.kind}", [trace], view, None)
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

"""Which records a view of a trace covers: the one filtered pass that every view reads
(`show` in each format, `diff`'s two sides, `plot`, `export`, ``stepdbg.load().to_pandas()``).

``--steps A:B`` and ``--optimizer N`` choose steps (`StepFilter`), ``--param GLOB``
chooses parameters (`ParamMatcher`). `TraceView` streams a trace's records through
the step filter, notes what it read on the way (every step, for the run's totals),
and refuses, once the trace is read, an optimizer the trace does not have.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

from .anomaly_view import AnomalyLog
from .run_info import RunInfo
from .schema import Anomaly, AnomalySteps, OptimizerInfo, StepRecord
from .style import listing, optimizer_label
from .tracefile import Record, Trace

NAMES_IN_ERROR = 8


@dataclass(frozen=True)
class StepFilter:
    """Which steps the view covers: ``--steps A:B`` (half-open, like a slice) and ``--optimizer``."""

    start: int = 0
    stop: int | None = None
    optimizer: int | None = None

    @classmethod
    def from_options(cls, steps: str | None, optimizer: int | None) -> StepFilter:
        """The filter ``--steps`` and ``--optimizer`` ask for; a bad ``--steps`` raises `ValueError`."""
        start, stop = parse_steps(steps)
        return cls(start=start, stop=stop, optimizer=optimizer)

    def admits(self, optimizer: int | None, step: int) -> bool:
        return (
            (self.optimizer is None or optimizer == self.optimizer)
            and step >= self.start
            and (self.stop is None or step < self.stop)
        )

    def admits_optimizer(self, optimizer: int | None) -> bool:
        return self.optimizer is None or optimizer == self.optimizer

    @property
    def description(self) -> str | None:
        parts = []
        if self.start or self.stop is not None:
            parts.append(f"steps {self.start}:{'' if self.stop is None else self.stop}")
        if self.optimizer is not None:
            parts.append(f"optimizer {self.optimizer}")
        return ", ".join(parts) or None


def parse_steps(text: str | None) -> tuple[int, int | None]:
    """``"100:200"`` → (100, 200); either side may be left out. Step numbers, not positions."""
    if text is None:
        return 0, None
    match = re.fullmatch(r"\s*(\d*)\s*:\s*(\d*)\s*", text)
    if not match:
        raise ValueError(f"--steps takes A:B, a range of step numbers such as 100:200, 100: or :200 (got {text!r})")
    start = int(match[1]) if match[1] else 0
    stop = int(match[2]) if match[2] else None
    if stop is not None and stop <= start:
        raise ValueError(f"--steps {text} selects no steps: B must be greater than A")
    return start, stop


class ParamMatcher:
    """Parameter names matching ``--param GLOB``; each name is matched once, however often it is met."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self._matches: dict[str, bool] = {}  # every name seen, whether it matches
        self.matched = False

    def __call__(self, name: str) -> bool:
        matches = self._matches.get(name)
        if matches is None:
            matches = self._matches[name] = fnmatchcase(name, self.pattern)
            self.matched = self.matched or matches
        return matches

    def check(self) -> None:
        """Say plainly, listing a few real names, when the pattern matched nothing."""
        if self.matched:
            return
        names = list(self._matches)
        if not names:
            raise ValueError(f"no parameter matches {self.pattern!r}: the trace names no parameters")
        raise ValueError(f"no parameter matches {self.pattern!r}; the trace has {listing(names, NAMES_IN_ERROR)}")


class OptimizerCheck:
    """Remembers the optimizers a trace has, to refuse ``--optimizer N`` for one it lacks."""

    def __init__(self, wanted: int | None) -> None:
        self.wanted = wanted
        self.seen: set[int | None] = set()

    def check(self, path: Path) -> None:
        if self.wanted is None or self.wanted in self.seen:
            return
        have = ", ".join(optimizer_label(i) for i in sorted(self.seen, key=lambda i: -1 if i is None else i))
        raise ValueError(f"{path} has no optimizer {self.wanted} ({'it has ' + have if have else 'it has none'})")


class TraceView:
    """A trace's records as the filter admits them, in file order, in one streaming pass.

    Optimizer records of the optimizers in view, their step records within the
    range, and the anomalies found at those steps. ``steps`` and ``last_t`` count
    every step read, in view or not, for the run's own totals; ``anomalies`` gathers
    every anomaly and `AnomalySteps` record, for the rules that fired in the range
    though first reported before it.
    """

    def __init__(self, trace: Trace, step_filter: StepFilter) -> None:
        self.trace = trace
        self.filter = step_filter
        self.known = OptimizerCheck(step_filter.optimizer)
        self.anomalies = AnomalyLog(step_filter)
        self.steps = 0
        self.last_t = 0.0

    def __iter__(self) -> Iterator[Record]:
        admits, seen = self.filter.admits, self.known.seen
        for record in self.trace:
            if isinstance(record, StepRecord):
                self.steps += 1
                self.last_t = record.t
                seen.add(record.optimizer)
                if admits(record.optimizer, record.step):
                    yield record
            elif isinstance(record, OptimizerInfo):
                seen.add(record.optimizer)
                if self.filter.admits_optimizer(record.optimizer):
                    yield record
            elif isinstance(record, Anomaly):
                self.last_t = max(self.last_t, record.t)
                self.anomalies.add(record)
                if admits(record.optimizer, record.step):
                    yield record
            elif isinstance(record, AnomalySteps):
                self.anomalies.add(record)
        self.known.check(self.trace.path)

    def run_info(self) -> RunInfo:
        """The run as its header and end record tell it (once the view has been read)."""
        return RunInfo.from_trace(self.trace, self.steps, self.last_t)

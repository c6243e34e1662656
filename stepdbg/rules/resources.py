"""The resource rules: a loop that waits for its data, memory that keeps growing.

Judged from the run's steps together, whatever optimizer made them, and reported
once per run (`RunRule`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from ..facts import StepFinished
from ..memory import MEASURES, step_memory
from ..style import fmt_bytes
from .base import INFO, WARNING, Finding, RunRule, Thresholds


@dataclass
class _InputWindow:
    """DataLoader waits and step time over the steps of the window being filled."""

    steps: int = 0
    data: float = 0.0
    total: float = 0.0
    first_step: int = 0
    records: int = 0
    """Step records seen (the run's first is left out)."""


class InputBound(RunRule):
    """DataLoader waits over a share of the time of `Thresholds.input_window` steps. Left
    out: the run's first step (set-up, and whatever the script fetched before its first
    backward) and a step whose wait includes a loader's first worker processes starting;
    later epochs' new workers count, since they cost every epoch (persistent_workers)."""

    id = "input-bound"
    severity = INFO
    graver = (WARNING, "past 60%")
    summary = "waiting for DataLoader batches takes over 30% of 50 steps' time (a warning past 60%)"
    condition = (
        "Over 50 steps at a time, whatever optimizer made them, waiting for DataLoader batches (the"
        " [data phase](profiling.md#the-data-phase)) takes more than 30% of their time. The message gives the"
        " share, the milliseconds of data and of the step, and the last loader's `num_workers`, `pin_memory`,"
        " `persistent_workers` and `prefetch_factor`. Reported once as information, and once more if a later"
        " window is over the warning threshold; `--strict` counts only the warning."
    )
    hint = (
        "raise the DataLoader's num_workers (persistent_workers=True keeps them across epochs, prefetch_factor"
        " sets how many batches each loads ahead); on a GPU, pin_memory=True with .to(device, non_blocking=True);"
        " or make the dataset's __getitem__ and the collate function cheaper"
    )

    def __init__(self, thresholds: Thresholds) -> None:
        super().__init__(thresholds)
        self.window = _InputWindow()

    def check(self, step: StepFinished) -> Finding | None:
        record = step.record
        window = self.window
        window.records += 1
        if window.records == 1 or step.data_startup:
            return None
        if not window.steps:
            window.first_step = record.step
        window.steps += 1
        window.data += record.time.get("data", 0.0)
        window.total += record.time.get("total", 0.0)
        limits = self.thresholds
        if window.steps < limits.input_window:
            return None
        self.window = _InputWindow(records=window.records)
        share = window.data / window.total if window.total > 0 else 0.0
        if share <= limits.input_share:
            return None
        steps = window.steps
        message = (
            f"waiting for DataLoader batches took {share:.0%} of the time of steps {window.first_step}–{record.step}"
            f" ({window.data / steps * 1e3:.3g} ms of {window.total / steps * 1e3:.3g} ms a step)"
            + (f"; the loader has {step.loader.describe()}" if step.loader is not None else "")
        )
        return Finding(message, severity=WARNING if share > limits.input_share_warning else INFO)


@dataclass
class _MemoryTrend:
    """The lowest step-end memory of each stretch of steps since the warm-up: stretches of
    doubling length, so that a run of any length keeps a few dozen numbers."""

    stretch: int
    kind: str = ""
    """What is measured (RSS, or CUDA's allocated bytes): another kind starts a new trend."""
    floors: list[tuple[int, int, int]] = field(default_factory=list)
    """(lowest bytes, first step, last step) of each finished stretch."""
    low: int | None = None
    first_step: int = 0
    seen: int = 0
    """Steps in the stretch being filled."""
    records: int = 0

    def add(self, value: int, step: int) -> bool:
        """Count a step's memory; whether a stretch just finished."""
        if self.seen == 0:
            self.low, self.first_step = value, step
        elif value < self.low:  # type: ignore[operator]
            self.low = value
        self.seen += 1
        if self.seen < self.stretch:
            return False
        self.floors.append((self.low, self.first_step, step))  # type: ignore[arg-type]
        self.seen = 0
        return True

    def merge(self) -> None:
        """Pairs of stretches become one, twice as long."""
        pairs = zip(self.floors[::2], self.floors[1::2])
        self.floors = [(min(a[0], b[0]), a[1], b[2]) for a, b in pairs]
        self.stretch *= 2


class MemoryGrowth(RunRule):
    """Step-end memory whose lowest value rose from each stretch of steps to the next, over
    `Thresholds.memory_stretches` stretches, by `Thresholds.memory_growth_bytes` at least.

    The lowest value of a stretch, not its last: memory freed late (a cache emptied, an
    evaluation's tensors) swings it up and down, a leak raises its floor. Stretches
    double in length as the run grows (the window spans the later half of the run at
    least), so that a slow leak shows over a long run, and one that begins after N steps
    shows by about 2.5 N.
    """

    id = "memory-growth"
    severity = WARNING
    summary = (
        "memory at the steps' ends keeps rising (RSS, or CUDA's allocated bytes), as when loss tensors are kept"
        " in a list"
    )
    condition = (
        "The memory at the steps' ends (RSS on the CPU, the CUDA allocator's allocated bytes on a GPU: see"
        " [memory](profiling.md#memory)) keeps rising: after 10 warm-up steps, the lowest value of each of 8"
        " stretches of steps is above the previous stretch's, by 16 MiB in all. Stretches are 25 steps at first"
        " and double in length as the run grows. Reported once per run."
    )
    hint = (
        "something keeps every step's tensors alive: keep loss.item() (a float), not loss, in lists"
        " and logs, and .detach() what you store; a cache or replay buffer filling on purpose grows"
        " like this until it is full (--disable memory-growth)"
    )

    def __init__(self, thresholds: Thresholds) -> None:
        super().__init__(thresholds)
        self.trend = _MemoryTrend(thresholds.memory_stretch)

    def check(self, step: StepFinished) -> Finding | None:
        record = step.record
        reading = step_memory(record.memory) if record.memory is not None else None
        if reading is None:
            return None
        kind, value = reading
        limits = self.thresholds
        trend = self.trend
        if kind != trend.kind:
            trend = self.trend = _MemoryTrend(limits.memory_stretch, kind)
        trend.records += 1
        if trend.records <= limits.memory_warmup or not trend.add(value, record.step):
            return None
        found = None
        floors = trend.floors[-limits.memory_stretches :]
        rise = floors[-1][0] - floors[0][0]
        if (
            len(floors) == limits.memory_stretches
            and rise >= limits.memory_growth_bytes
            and all(a[0] < b[0] for a, b in itertools.pairwise(floors))
        ):
            (low, first, _), (high, _, last) = floors[0], floors[-1]
            per_step = rise / (trend.stretch * (len(floors) - 1))
            found = Finding(
                f"{MEASURES[kind]} at the steps' ends rose through each of {len(floors)} stretches"
                f" of {trend.stretch} steps,"
                f" from {fmt_bytes(low)} at least in the first to {fmt_bytes(high)} in the last"
                f" (steps {first}–{last}: about {fmt_bytes(per_step)} a step)"
            )
        if len(trend.floors) == 2 * limits.memory_stretches:
            trend.merge()
        return found


RULES = (InputBound, MemoryGrowth)
"""This family's rules, in the order the README lists them."""

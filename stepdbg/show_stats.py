"""What `stepdbg show` reports, gathered in one pass over a trace's view (`ShowStats`), for
the text and JSON renderers.

Memory does not grow with the run beyond what the view needs: a float per step
and optimizer for the medians, fixed-size buckets for the sparklines, one group
per anomaly rule. Records are dropped as soon as they are counted.
"""

from __future__ import annotations

import itertools
import math
from array import array
from dataclasses import dataclass, field
from typing import Any

from .anomaly_view import AnomalyGroup
from .memory import MEASURES, step_memory
from .numeric import floats, is_finite, median
from .run_info import RunInfo
from .schema import PHASES, OptimizerInfo, StepRecord
from .style import MISSING
from .view import ParamMatcher, StepFilter, TraceView

SPARK_WIDTH = 60
PARAM_SPARK_WIDTH = 12


class Downsampler:
    """Means of runs of consecutive values, never more than 2 × width runs, whatever the count.

    The runs double in length whenever there are 2 × width of them, so a sparkline
    over a million steps takes the same memory as one over a hundred.
    """

    def __init__(self, width: int) -> None:
        self.width = width
        self.run_length = 1
        self.sums: list[float] = []
        self.counts: list[int] = []  # finite values in each run
        self._sum = 0.0
        self._finite = 0
        self._seen = 0

    def add(self, value: float | None) -> None:
        if value is not None and math.isfinite(value):
            self._sum += value
            self._finite += 1
        self._seen += 1
        if self._seen == self.run_length:
            self.sums.append(self._sum)
            self.counts.append(self._finite)
            self._sum, self._finite, self._seen = 0.0, 0, 0
            if len(self.sums) == 2 * self.width:
                self.sums = [a + b for a, b in zip(self.sums[::2], self.sums[1::2])]
                self.counts = [a + b for a, b in zip(self.counts[::2], self.counts[1::2])]
                self.run_length *= 2

    def means(self, width: int | None = None) -> list[float | None]:
        """At most ``width`` means (default: the width asked for), in order; None where a
        stretch had no finite value."""
        width = min(width or self.width, self.width)
        sums, counts = list(self.sums), list(self.counts)
        if self._seen:
            sums.append(self._sum)
            counts.append(self._finite)
        if len(sums) > width:
            bounds = [len(sums) * i // width for i in range(width + 1)]
            sums = [sum(sums[lo:hi]) for lo, hi in itertools.pairwise(bounds)]
            counts = [sum(counts[lo:hi]) for lo, hi in itertools.pairwise(bounds)]
        return [s / c if c else None for s, c in zip(sums, counts)]


@dataclass
class OptimizerStats:
    """One optimizer's steps in the view, folded into the figures of its table row."""

    index: int | None
    cls: str = MISSING
    params: int = 0
    steps: int = 0
    skipped: int = 0
    first_step: int | None = None
    last_step: int | None = None
    loss_first: float | None = None
    loss_last: float | None = None
    loss_min: float | None = None
    grad_norms: array[float] = field(default_factory=floats)  # the finite ones
    grad_nonfinite: int = 0
    lr_min: float | None = None
    lr_max: float | None = None
    update_ratios: array[float] = field(default_factory=floats)
    loss_line: Downsampler = field(default_factory=lambda: Downsampler(SPARK_WIDTH))
    grad_line: Downsampler = field(default_factory=lambda: Downsampler(SPARK_WIDTH))

    def describe(self, info: OptimizerInfo) -> None:
        self.cls = info.cls
        self.params = len(info.param_names)

    def add(self, record: StepRecord) -> None:
        self.steps += 1
        self.skipped += record.skipped
        if self.first_step is None:
            self.first_step = record.step
        self.last_step = record.step
        self._add_loss(record.loss)
        grad_norm = record.grad_norm
        if is_finite(grad_norm):
            self.grad_norms.append(grad_norm)
        elif grad_norm is not None:
            self.grad_nonfinite += 1
        self.grad_line.add(grad_norm)
        for lr in record.lr:
            if is_finite(lr):
                self.lr_min = lr if self.lr_min is None else min(self.lr_min, lr)
                self.lr_max = lr if self.lr_max is None else max(self.lr_max, lr)
        if is_finite(record.update_ratio):
            self.update_ratios.append(record.update_ratio)

    def _add_loss(self, loss: float | None) -> None:
        self.loss_line.add(loss)
        if loss is None:
            return
        if self.loss_first is None:
            self.loss_first = loss
        self.loss_last = loss
        if math.isfinite(loss) and (self.loss_min is None or loss < self.loss_min):
            self.loss_min = loss

    def to_json(self) -> dict[str, Any]:
        return {
            "optimizer": self.index,
            "class": self.cls,
            "params": self.params,
            "steps": self.steps,
            "skipped": self.skipped,
            "first_step": self.first_step,
            "last_step": self.last_step,
            "loss": {"first": self.loss_first, "last": self.loss_last, "min": self.loss_min},
            "grad_norm": {
                "median": median(self.grad_norms),
                "max": max(self.grad_norms, default=None),
                "nonfinite": self.grad_nonfinite,
            },
            "lr": {"min": self.lr_min, "max": self.lr_max},
            "update_ratio": {"median": median(self.update_ratios)},
        }


@dataclass
class PhaseStats:
    total: float = 0.0
    slowest: float = -math.inf
    slowest_at: tuple[int | None, int] | None = None


@dataclass
class Profile:
    """Where the time went, per phase, over the steps in the view."""

    steps: int = 0
    total: float = 0.0
    phases: dict[str, PhaseStats] = field(default_factory=lambda: {phase: PhaseStats() for phase in PHASES})

    def add(self, record: StepRecord) -> None:
        self.steps += 1
        times = record.time
        self.total += times.get("total", 0.0)
        for phase, stats in self.phases.items():
            seconds = times.get(phase)
            if seconds is None:
                continue  # a phase the trace does not record (data, before it existed)
            stats.total += seconds
            if seconds > stats.slowest:
                stats.slowest, stats.slowest_at = seconds, (record.optimizer, record.step)

    def share(self, phase: str) -> float | None:
        return self.phases[phase].total / self.total if self.total > 0 else None

    def to_json(self) -> dict[str, Any]:
        phases = {}
        for phase, stats in self.phases.items():
            if stats.slowest_at is None:
                continue  # no steps
            optimizer, step = stats.slowest_at
            phases[phase] = {
                "total": stats.total,
                "mean": stats.total / self.steps,
                "share": self.share(phase),
                "slowest": {"optimizer": optimizer, "step": step, "time": stats.slowest},
            }
        return {"steps": self.steps, "total": self.total, "phases": phases}


@dataclass
class MemoryStats:
    """Memory at the steps' ends over the view, and its peak (see `memory`): on CUDA the
    allocator's own peak, on the CPU the largest RSS a step ended with."""

    measure: str | None = None
    """The key of what is measured (see `memory.MEASURES`); None: the trace has no memory."""
    first: int | None = None
    last: int | None = None
    peak: int | None = None
    peak_at: tuple[int | None, int] | None = None
    """(optimizer, step) of the first step that reached the peak."""
    line: Downsampler = field(default_factory=lambda: Downsampler(SPARK_WIDTH))

    def add(self, record: StepRecord) -> None:
        reading = step_memory(record.memory)
        if reading is None:
            return
        self.measure, value = reading
        if self.first is None:
            self.first = value
        self.last = value
        peak = record.memory.get("peak", value)  # type: ignore[union-attr]
        if self.peak is None or peak > self.peak:
            self.peak, self.peak_at = peak, (record.optimizer, record.step)
        self.line.add(value)

    @property
    def growth(self) -> int | None:
        return self.last - self.first if self.last is not None and self.first is not None else None

    @property
    def description(self) -> str:
        return MEASURES.get(self.measure or "", "memory")

    def to_json(self) -> dict[str, Any] | None:
        if self.measure is None:
            return None
        optimizer, step = self.peak_at if self.peak_at is not None else (None, None)
        return {
            "measure": self.measure,
            "first": self.first,
            "last": self.last,
            "growth": self.growth,
            "peak": self.peak,
            "peak_step": step,
            "peak_optimizer": optimizer,
        }


@dataclass
class ParamStats:
    optimizer: int | None
    name: str
    norms: array[float] = field(default_factory=floats)  # the finite ones, on detail steps
    nonfinite: int = 0
    first: float | None = None
    last: float | None = None
    update_ratios: array[float] = field(default_factory=floats)
    line: Downsampler = field(default_factory=lambda: Downsampler(PARAM_SPARK_WIDTH))

    def add(self, norm: float | None, update_ratio: float | None) -> None:
        if norm is not None:
            if self.first is None:
                self.first = norm
            self.last = norm
            if math.isfinite(norm):
                self.norms.append(norm)
            else:
                self.nonfinite += 1
        self.line.add(norm)
        if is_finite(update_ratio):
            self.update_ratios.append(update_ratio)

    @property
    def detail_steps(self) -> int:
        return len(self.norms) + self.nonfinite

    def to_json(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer,
            "name": self.name,
            "detail_steps": self.detail_steps,
            "first": self.first,
            "last": self.last,
            "min": min(self.norms, default=None),
            "median": median(self.norms),
            "max": max(self.norms, default=None),
            "nonfinite": self.nonfinite,
            "update_ratio_median": median(self.update_ratios),
        }


class ParamTable:
    """Per-parameter gradient norms over the detail steps, for names matching a glob."""

    def __init__(self, pattern: str) -> None:
        self.matcher = ParamMatcher(pattern)
        self.stats: dict[tuple[int | None, str], ParamStats] = {}

    @property
    def pattern(self) -> str:
        return self.matcher.pattern

    def match(self, optimizer: int | None, name: str) -> ParamStats | None:
        """The stats to add to for this name, or None when it does not match."""
        key = (optimizer, name)
        stats = self.stats.get(key)
        if stats is None and self.matcher(name):
            stats = self.stats[key] = ParamStats(optimizer, name)
        return stats

    def describe(self, info: OptimizerInfo) -> None:
        for name in info.param_names:
            self.match(info.optimizer, name)

    def add(self, record: StepRecord) -> None:
        ratios = record.param_update_ratios or {}
        for name, norm in (record.param_grad_norms or {}).items():
            stats = self.match(record.optimizer, name)
            if stats is not None:
                stats.add(norm, ratios.get(name))

    def check(self) -> None:
        self.matcher.check()

    def to_json(self) -> list[dict[str, Any]]:
        return [stats.to_json() for stats in self.stats.values()]


@dataclass
class ShowStats:
    """Everything `show` says about a view of a trace: the run, each optimizer's figures, the
    time per phase, the rules that fired, and with ``--param`` the parameters' norms."""

    run: RunInfo
    filter: StepFilter
    optimizers: dict[int | None, OptimizerStats]
    profile: Profile
    anomalies: dict[str, AnomalyGroup]
    params: ParamTable | None
    memory: MemoryStats = field(default_factory=MemoryStats)


def collect(view: TraceView, param_pattern: str | None = None) -> ShowStats:
    """Read the view once and fold every record in it into its figures."""
    optimizers: dict[int | None, OptimizerStats] = {}
    profile = Profile()
    memory = MemoryStats()
    params = ParamTable(param_pattern) if param_pattern is not None else None
    for record in view:
        if isinstance(record, StepRecord):
            stats = optimizers.get(record.optimizer)
            if stats is None:
                stats = optimizers[record.optimizer] = OptimizerStats(record.optimizer)
            stats.add(record)
            profile.add(record)
            memory.add(record)
            if params is not None and record.param_grad_norms is not None:
                params.add(record)
        elif isinstance(record, OptimizerInfo):
            optimizers.setdefault(record.optimizer, OptimizerStats(record.optimizer)).describe(record)
            if params is not None:
                params.describe(record)
    if params is not None:
        params.check()
    anomalies = view.anomalies.groups(view.trace.end)
    return ShowStats(view.run_info(), view.filter, optimizers, profile, anomalies, params, memory)

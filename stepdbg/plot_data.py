"""What `stepdbg plot` draws, gathered in one streaming pass over each trace.

Nothing grows with the run: every line is binned (`Lines`: at most
``2 × LINE_POINTS`` means of consecutive records), and the heat map keeps at most
``2 × HEAT_COLUMNS`` columns of detail steps. A 100,000-step trace takes the
memory of a 2,000-step one. Needs numpy (matplotlib's own dependency).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .diff_compare import Tolerance, compare_traces
from .run_info import RunInfo
from .schema import PHASES, Anomaly, OptimizerInfo, StepRecord
from .tracefile import Trace
from .view import ParamMatcher, StepFilter, TraceView

LINE_POINTS = 600
HEAT_COLUMNS = 150
CHUNK = 4096
"""Records appended to plain lists before numpy folds them into bins: a list append is all a record costs."""
HELD_ANOMALIES = 200
"""Anomaly records kept per trace for markers; each rule reports a problem once, so few traces reach it."""
TIMED = (*PHASES, "overhead")
_STEP = "\0step"
"""The x column of `Lines`: a name no parameter or layer has."""


class Lines:
    """Values per record, column by column, binned alike: each bin the mean of a run of
    consecutive records (of its finite values), never more than ``2 × width`` bins. The
    runs double as the bins fill, as `show`'s `Downsampler` does; here the records wait
    in plain lists, and numpy folds them a chunk at a time (a hundred thousand records
    through ``Downsampler.add`` per column cost seconds; appends cost milliseconds).
    """

    def __init__(self, width: int = LINE_POINTS) -> None:
        self.width = width
        self.run_length = 1
        self.rows = 0
        self._waiting = 0  # rows in the lists, not yet in bins
        self._bins = 0
        self._values: dict[str, list[float]] = {}
        self._sums: dict[str, np.ndarray] = {}
        self._counts: dict[str, np.ndarray] = {}

    def column(self, name: str) -> list[float]:
        """The list to append this row's value of ``name`` to (NaN for none); a column met late
        is empty (NaN) for the rows before."""
        values = self._values.get(name)
        if values is None:
            values = self._values[name] = [math.nan] * self._waiting
            self._sums[name] = np.zeros(self._bins)
            self._counts[name] = np.zeros(self._bins)
        return values

    def end_row(self, step: float, pad: bool = False) -> None:
        """The row of ``step`` is complete: every column has had its value appended (NaN for
        none), or, with ``pad``, those that were not get NaN (a loop over the columns)."""
        self.column(_STEP).append(step)
        self.rows += 1
        self._waiting += 1
        if pad:
            for values in self._values.values():
                if len(values) < self._waiting:
                    values.append(math.nan)
        if self._waiting >= CHUNK:
            self._fold(self._waiting // self.run_length * self.run_length)

    def _fold(self, rows: int) -> None:
        """Fold the first ``rows`` waiting rows into bins of ``run_length`` (the last may be shorter)."""
        if not rows:
            return
        length = self.run_length
        bins = -(-rows // length)
        for name, values in self._values.items():
            block = np.full(bins * length, np.nan)
            block[:rows] = values[:rows]
            finite = np.isfinite(block).reshape(bins, length)
            sums = np.where(finite, block.reshape(bins, length), 0.0).sum(axis=1)
            self._sums[name] = np.concatenate([self._sums[name], sums])
            self._counts[name] = np.concatenate([self._counts[name], finite.sum(axis=1)])
            del values[:rows]
        self._waiting -= rows
        self._bins += bins
        while self._bins >= 2 * self.width:
            pairs = self._bins // 2 * 2
            for table in (self._sums, self._counts):
                for name, column in table.items():
                    table[name] = np.concatenate([column[:pairs].reshape(-1, 2).sum(axis=1), column[pairs:]])
            self._bins = pairs // 2 + self._bins - pairs
            self.run_length *= 2

    def means(self, name: str) -> np.ndarray:
        """The bins' means of ``name``, NaN where a bin had no finite value (a gap in the line)."""
        self._fold(self._waiting)
        if name not in self._sums:
            return np.full(self._bins, np.nan)
        counts = self._counts[name]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(counts > 0, self._sums[name] / counts, np.nan)

    def finite(self, name: str) -> bool:
        """Whether ``name`` had any finite value."""
        self._fold(self._waiting)
        return name in self._counts and bool(self._counts[name].any())

    def steps(self) -> np.ndarray:
        """Each bin's mean step: where its means stand on the x axis."""
        return self.means(_STEP)

    def names(self) -> list[str]:
        """The columns, in the order met."""
        return [name for name in self._values if name != _STEP]


def layer_of(name: str) -> str:
    """A parameter's layer: its module's qualified name (``encoder.0.weight`` → ``encoder.0``)."""
    return name.rpartition(".")[0] or name


def layer_norms(norms: dict[str, float | None], params: ParamMatcher | None) -> dict[str, float]:
    """The rows of one detail step: each layer's norm (its parameters' together, as the root of
    their squares), or with ``--param`` each matching parameter's own."""
    if params is not None:
        return {name: norm for name, norm in norms.items() if norm is not None and params(name)}
    squares: dict[str, float] = {}
    for name, norm in norms.items():
        if norm is not None:
            layer = layer_of(name)
            squares[layer] = squares.get(layer, 0.0) + norm * norm
    return {layer: math.sqrt(total) for layer, total in squares.items()}


LOSS = "loss"
GRAD_NORM = "grad_norm"
GROUP_NORM = "group_norm."
LR = "lr."
TIME = "time."
TOTAL = "time.total"
UPDATE_RATIO = "update_ratio"


@dataclass
class OptimizerLines:
    """One optimizer's lines in one trace: every step's figures (`per_step`: loss, grad norm,
    each group's norm and lr, each phase's time) and the detail steps' (`per_detail`: the update
    size; `heat`: each layer's gradient norm, a column per layer)."""

    index: int | None
    cls: str | None = None
    groups: int = 0
    per_step: Lines = field(default_factory=Lines)
    per_detail: Lines = field(default_factory=Lines)
    heat: Lines = field(default_factory=lambda: Lines(HEAT_COLUMNS))
    _fixed: list[list[float]] | None = None
    _group_norm: list[float] = field(default_factory=list)
    _group_lr: list[float] = field(default_factory=list)

    def add(self, record: StepRecord, params: ParamMatcher | None) -> None:
        lines, nan = self.per_step, math.nan
        if self._fixed is None:  # the lists of the columns every record has, looked up once
            self._fixed = [lines.column(name) for name in (LOSS, GRAD_NORM, TOTAL, *(TIME + p for p in TIMED))]
        times = record.time
        values = (record.loss, record.grad_norm, times.get("total"), *map(times.get, TIMED))
        for column, value in zip(self._fixed, values):
            column.append(nan if value is None else value)
        norms, lrs = record.group_grad_norms, record.lr
        if len(norms) > self.groups or len(lrs) > self.groups or self.groups > 1:
            self._add_groups(norms, lrs)
        elif self.groups == 1:  # the common case: one group
            self._group_norm.append(nan if not norms or norms[0] is None else norms[0])
            self._group_lr.append(nan if not lrs or lrs[0] is None else lrs[0])
        lines.end_row(record.step)
        if record.param_grad_norms is not None:
            self.per_detail.column(UPDATE_RATIO).append(nan if record.update_ratio is None else record.update_ratio)
            self.per_detail.end_row(record.step)
            for name, norm in layer_norms(record.param_grad_norms, params).items():
                self.heat.column(name).append(norm)
            self.heat.end_row(record.step, pad=True)  # a layer without a gradient this time

    def _add_groups(self, norms: list[float | None], lrs: list[float | None]) -> None:
        """Each group's norm and lr; a group added while training starts its columns there."""
        self.groups = max(self.groups, len(norms), len(lrs))
        for group in range(self.groups):  # every column gets a value in every row
            norm = norms[group] if group < len(norms) else None
            lr = lrs[group] if group < len(lrs) else None
            self.per_step.column(f"{GROUP_NORM}{group}").append(math.nan if norm is None else norm)
            self.per_step.column(f"{LR}{group}").append(math.nan if lr is None else lr)
        if self.groups == 1:
            self._group_norm, self._group_lr = self.per_step.column(f"{GROUP_NORM}0"), self.per_step.column(f"{LR}0")


@dataclass
class RunLines:
    """Everything one trace contributes to the figure."""

    label: str
    run: RunInfo
    optimizers: dict[int | None, OptimizerLines]
    anomalies: list[Anomaly]
    anomalies_left_out: int = 0


def gather(path: Path, label: str, step_filter: StepFilter, param: str | None = None) -> RunLines:
    """Read one trace once, folding each record in view into its optimizer's lines."""
    trace = Trace(path)
    view = TraceView(trace, step_filter)
    params = ParamMatcher(param) if param is not None else None
    optimizers: dict[int | None, OptimizerLines] = {}
    anomalies: list[Anomaly] = []
    left_out = 0
    for record in view:
        if isinstance(record, StepRecord):
            lines = optimizers.get(record.optimizer)
            if lines is None:
                lines = optimizers[record.optimizer] = OptimizerLines(record.optimizer)
            lines.add(record, params)
        elif isinstance(record, OptimizerInfo):
            optimizers.setdefault(record.optimizer, OptimizerLines(record.optimizer)).cls = record.cls
            if params is not None:
                for name in record.param_names:
                    params(name)
        elif isinstance(record, Anomaly):
            if len(anomalies) < HELD_ANOMALIES:
                anomalies.append(record)
            else:
                left_out += 1
    if params is not None:
        params.check()
    return RunLines(label, view.run_info(), optimizers, anomalies, left_out)


@dataclass(frozen=True)
class Divergence:
    """Where `diff` says two runs first part: the step, and the fields that differ there."""

    optimizer: int | None
    step: int
    fields: list[str]


def first_divergence(a: Path, b: Path, ignore: frozenset[str] = frozenset()) -> Divergence | None:
    """The first differing step `stepdbg diff A B` reports (default tolerances), or None where they agree."""
    first = compare_traces(a, b, Tolerance(), ignore).comparison.first
    if first is None:
        return None
    return Divergence(first.optimizer, first.step, [d.field for d in first.fields])

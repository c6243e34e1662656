"""`stepdbg show` of several traces: the ranks of one distributed run, side by side.

Read side only (comparing ranks live would need a collective). Each trace is read
once, keeping a few numbers a step in compact arrays, then the ranks are compared:

- per rank: steps, median time per phase, the share of time spent waiting for
  batches, memory;
- the straggler. In a synchronous job every rank's step lasts as long as the
  slowest one's (each waits for the others inside a collective: backward's
  all-reduce under DDP, or the next one, such as the buffers DDP broadcasts at the
  start of forward), so step time names no one. The straggler is the rank whose
  own work (data, zero_grad, step or forward) takes longer than the others' by at
  least `STRAGGLER_MARGIN` of a step, medians over the steps compared, while the
  others spend that time waiting in another phase. Where two ranks each stand out
  in a phase, the phase that can hold no collective names the straggler: data,
  then zero_grad, then step, then forward (a data straggler's partner waits in
  forward's broadcast). backward never does: its own compute and the others' wait
  for it are both inside it;
- ranks out of step: different step counts, or gradient norms that differ at a step
  where DDP's all-reduce makes every rank's gradients the same (an optimizer whose
  model is wrapped in DistributedDataParallel, or whose norms agree at other steps).
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .numeric import floats, median
from .run_info import RunInfo
from .schema import PHASES, OptimizerInfo, StepRecord
from .show_stats import MemoryStats
from .style import optimizer_label
from .tracefile import Trace
from .view import StepFilter, TraceView

STRAGGLER_MARGIN = 0.1
"""A rank's own work must exceed the others' by this share of the median step time, a step."""
WORK_PHASES = ("data", "zero_grad", "step", "forward")
"""The phases a straggler can be slow in, those least likely to hold a collective first."""
WAITED = 0.5
"""The others must be seen waiting at least this share of the straggler's excess (the job is
synchronous); otherwise the rank is slower and its steps longer, and no one waits for it."""
SYNC_RTOL = 1e-5
"""Two ranks' gradient norms agree within this relative tolerance (all-reduced gradients are
the same tensors, and their norms the same floats)."""
TIMES = (*PHASES, "total")


@dataclass
class RankStats:
    """One rank's steps, reduced to what the comparison needs."""

    path: Path
    rank: int | None
    label: str = ""
    run: RunInfo | None = None
    times: dict[str, array[float]] = field(default_factory=lambda: {name: floats() for name in TIMES})
    """Seconds per phase of each step compared (every optimizer's first step left out: start-up)."""
    phases: set[str] = field(default_factory=set)
    """The phases the trace records (a trace from before ``data`` has none of it)."""
    optimizers: array[int] = field(default_factory=lambda: array("q"))
    steps: array[int] = field(default_factory=lambda: array("q"))
    grad_norms: array[float] = field(default_factory=floats)
    """Per step record, in file order (NaN where there is none)."""
    counts: dict[int | None, int] = field(default_factory=dict)
    ddp: set[int] = field(default_factory=set)
    data: float = 0.0
    total: float = 0.0
    memory: MemoryStats = field(default_factory=MemoryStats)

    def add(self, record: StepRecord) -> None:
        optimizer = record.optimizer
        self.optimizers.append(-1 if optimizer is None else optimizer)
        self.steps.append(record.step)
        norm = record.grad_norm
        self.grad_norms.append(math.nan if norm is None else norm)
        self.counts[optimizer] = self.counts.get(optimizer, 0) + 1
        times = record.time
        self.data += times.get("data", 0.0)
        self.total += times.get("total", 0.0)
        if self.counts[optimizer] > 1:
            for name, values in self.times.items():
                seconds = times.get(name)
                if seconds is not None:
                    values.append(seconds)
            if len(self.phases) < len(PHASES):
                self.phases.update(phase for phase in PHASES if phase in times)
        self.memory.add(record)

    def median(self, name: str) -> float | None:
        return median(self.times[name])

    @property
    def data_share(self) -> float | None:
        return self.data / self.total if self.total > 0 and "data" in self.phases else None

    def to_json(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "label": self.label,
            "path": str(self.path),
            "steps": sum(self.counts.values()),
            "median": {name: self.median(name) for name in TIMES if name == "total" or name in self.phases},
            "data_share": self.data_share,
            "memory": self.memory.to_json(),
            "run": self.run.to_json() if self.run is not None else None,
        }


@dataclass
class Straggler:
    label: str
    phase: str
    excess: float
    """Seconds a step its median in ``phase`` exceeds the others' median."""
    waited_in: str | None
    """The phase where the others spend the most time the straggler does not (None: nowhere)."""
    wait: float
    synchronous: bool
    """Whether the others wait for it (otherwise its steps are longer, and no one waits)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "rank": self.label,
            "phase": self.phase,
            "excess": self.excess,
            "waited_in": self.waited_in,
            "wait": self.wait,
            "synchronous": self.synchronous,
        }


@dataclass
class SyncDifference:
    """An optimizer whose gradient norms differ between ranks at steps where they should not."""

    optimizer: int | None
    compared: int
    differing: int
    first_step: int
    values: dict[str, float | None]
    """Each rank's norm at the first differing step."""
    ddp: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer,
            "steps_compared": self.compared,
            "steps_differing": self.differing,
            "first_step": self.first_step,
            "grad_norms": self.values,
            "ddp": self.ddp,
        }


@dataclass
class RankComparison:
    ranks: list[RankStats]
    filter: StepFilter
    straggler: Straggler | None
    step_counts: dict[str, dict[str, int]] | None
    """Per optimizer (its label), each rank's step count, where they differ."""
    sync: list[SyncDifference]
    note: str | None = None
    """Why no straggler was looked for (not the ranks of one run)."""

    @property
    def step_median(self) -> float | None:
        return median([m for rank in self.ranks if (m := rank.median("total")) is not None])

    def to_json(self) -> dict[str, Any]:
        return {
            "ranks": [rank.to_json() for rank in self.ranks],
            "filter": self.filter.description,
            "straggler": self.straggler.to_json() if self.straggler is not None else None,
            "margin": STRAGGLER_MARGIN,
            "step_counts": self.step_counts,
            "out_of_sync": [difference.to_json() for difference in self.sync],
            "note": self.note,
        }


def read_rank(path: str | Path, step_filter: StepFilter) -> RankStats:
    trace = Trace(path)
    stats = RankStats(trace.path, trace.header.rank)
    view = TraceView(trace, step_filter)
    for record in view:
        if isinstance(record, StepRecord):
            stats.add(record)
        elif isinstance(record, OptimizerInfo) and record.ddp:
            stats.ddp.add(record.optimizer)
    stats.run = view.run_info()
    return stats


def compare_ranks(paths: Sequence[str | Path], step_filter: StepFilter) -> RankComparison:
    """Read every trace and compare them as the ranks of one run."""
    ranks = [read_rank(path, step_filter) for path in paths]
    numbers = [rank.rank for rank in ranks]
    one_run = None not in numbers and len(set(numbers)) == len(numbers)
    for rank in ranks:
        rank.label = f"rank {rank.rank}" if one_run else rank.path.name
    if one_run:
        ranks.sort(key=lambda rank: rank.rank)  # type: ignore[arg-type, return-value]
    note = None if one_run else "these traces are not the ranks of one run (each needs a rank of its own in its header)"
    straggler = find_straggler(ranks) if one_run else None
    return RankComparison(ranks, step_filter, straggler, _step_counts(ranks), _sync_differences(ranks), note)


def find_straggler(ranks: list[RankStats]) -> Straggler | None:
    """The rank the others wait for, and the phase it is slow in (see the module's docstring)."""
    if len(ranks) < 2:
        return None
    medians = [{name: rank.median(name) for name in TIMES} for rank in ranks]
    step = median([m["total"] for m in medians if m["total"] is not None])
    if not step:
        return None
    candidates = []
    for index, (rank, mine) in enumerate(zip(ranks, medians)):
        others = medians[:index] + medians[index + 1 :]
        excess = {name: _excess(mine, others, name) for name in TIMES}
        for order, phase in enumerate(WORK_PHASES):
            if phase in rank.phases and excess[phase] >= STRAGGLER_MARGIN * step:
                candidates.append((order, -excess[phase], rank, phase, excess))
    if not candidates:
        return None
    # the largest excess, unless another rank stands out about as much (half as much at least) in
    # a phase less likely to hold a collective: then the first one is waiting for the second
    candidates.sort(key=lambda c: c[1])
    top = candidates[0]
    paired = [c for c in candidates if c[2] is not top[2] and c[0] < top[0] and -c[1] >= -top[1] / 2]
    _, _, rank, phase, excess = min(paired, key=lambda c: c[:2]) if paired else top
    waits = {name: -excess[name] for name in PHASES if name != phase and excess[name] < 0}
    waited_in = max(waits, key=waits.__getitem__) if waits else None
    synchronous = sum(waits.values()) >= WAITED * excess[phase] and excess["total"] < WAITED * excess[phase]
    wait = waits[waited_in] if waited_in is not None else 0.0
    return Straggler(rank.label, phase, excess[phase], waited_in, wait, synchronous)


def _excess(mine: dict[str, float | None], others: list[dict[str, float | None]], name: str) -> float:
    """How much ``mine`` exceeds the median of the other ranks' medians, in seconds."""
    theirs = median([m[name] for m in others if m[name] is not None])  # type: ignore[misc]
    value = mine[name]
    return value - theirs if value is not None and theirs is not None else 0.0


def _step_counts(ranks: list[RankStats]) -> dict[str, dict[str, int]] | None:
    """Each rank's step count per optimizer, for the optimizers whose counts differ."""
    optimizers = sorted({o for rank in ranks for o in rank.counts}, key=lambda o: -1 if o is None else o)
    differing = {}
    for optimizer in optimizers:
        counts = {rank.label: rank.counts.get(optimizer, 0) for rank in ranks}
        if len(set(counts.values())) > 1:
            differing[optimizer_label(optimizer)] = counts
    return differing or None


def _sync_differences(ranks: list[RankStats]) -> list[SyncDifference]:
    """Optimizers whose gradient norms differ between ranks at steps where all-reduced
    gradients make them equal: everywhere under DDP, and, for an optimizer not known to be
    under DDP, at some steps while they agree at others (all-reduced in some other way)."""
    if len(ranks) < 2:
        return []
    reference = ranks[0]
    aligned = all(r.optimizers == reference.optimizers and r.steps == reference.steps for r in ranks[1:])
    positions: list[list[int]]
    if aligned:
        positions = [list(range(len(reference.steps)))] * len(ranks)
    else:  # out of step: pair the records by (optimizer, step)
        where = [{(o, s): i for i, (o, s) in enumerate(zip(r.optimizers, r.steps))} for r in ranks]
        common = [key for key in where[0] if all(key in w for w in where[1:])]
        positions = [[w[key] for key in common] for w in where]
    found: dict[int, list[Any]] = {}  # optimizer: [compared, differing, first step, values, agreed]
    for column in range(len(positions[0])):
        at = [rank.grad_norms[positions[r][column]] for r, rank in enumerate(ranks)]
        if any(math.isnan(v) for v in at):
            continue
        optimizer = reference.optimizers[positions[0][column]]
        entry = found.setdefault(optimizer, [0, 0, None, None, 0])
        entry[0] += 1
        if all(math.isclose(v, at[0], rel_tol=SYNC_RTOL) for v in at[1:]):
            entry[4] += 1
        else:
            entry[1] += 1
            if entry[2] is None:
                entry[2] = reference.steps[positions[0][column]]
                entry[3] = {rank.label: value for rank, value in zip(ranks, at)}
    differences = []
    for optimizer, (compared, differing, first, values, agreed) in found.items():
        ddp = all(optimizer in rank.ddp for rank in ranks)
        if differing and (ddp or agreed):
            index = None if optimizer == -1 else optimizer
            differences.append(SyncDifference(index, compared, differing, first, values, ddp))
    return differences

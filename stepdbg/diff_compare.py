"""What `stepdbg diff` finds: two traces read once, side by side, step against step.

Both traces stream in lockstep: step records are paired by (optimizer, step), and
whichever trace is behind on the optimizers both have is read next, so a trace
with an extra optimizer, or one that stopped early, does not pile up records.
At most `PENDING_LIMIT` records per optimizer wait for a partner; one that waits
longer is counted as a step the other trace lacks. Nothing else is kept per step
but the phase times, for their medians.
"""

from __future__ import annotations

import math
import operator
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import exit_codes
from .numeric import floats, is_finite, median
from .run_info import RunInfo
from .schema import PHASES, Anomaly, OptimizerInfo, StepRecord
from .style import listing, optimizer_label, step_label
from .tracefile import Trace
from .view import StepFilter, TraceView

PENDING_LIMIT = 1000
TOP_PARAMS = 5
NAMES_LISTED = 5
FIELDS = (
    "calls",
    "backward_calls",
    "skipped",
    "loss",
    "grad_norm",
    "group_grad_norms",
    "lr",
    "update_ratio",
    "param_grad_norms",
    "param_update_ratios",
)
PARAM_FIELDS = ("param_grad_norms", "param_update_ratios")
TIMED = (*PHASES, "total")


# --- comparing values --------------------------------------------------------


@dataclass(frozen=True)
class Tolerance:
    rtol: float = 1e-5
    atol: float = 1e-8

    def close(self, a: float | None, b: float | None) -> bool:
        if a == b:
            return True
        if a is None or b is None:
            return False
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        if math.isinf(a) or math.isinf(b):
            return False
        return abs(a - b) <= self.atol + self.rtol * abs(a)  # relative to A, the reference, as `rel_diff`

    def close_lists(self, a: list[float | None], b: list[float | None]) -> bool:
        return a == b or (len(a) == len(b) and all(self.close(x, y) for x, y in zip(a, b)))


def rel_diff(a: Any, b: Any) -> float | None:
    """|b - a| / |a| for numbers (the largest over lists); None where it has no meaning."""
    if isinstance(a, list) and isinstance(b, list):
        found = [rel_diff(x, y) for x, y in zip(a, b)]
        return max((r for r in found if r is not None), default=None)
    if not isinstance(a, float | int) or not isinstance(b, float | int) or isinstance(a, bool):
        return None
    if a == b:
        return 0.0
    if not (math.isfinite(a) and math.isfinite(b)):
        return None
    return abs(b - a) / abs(a) if a else math.inf


@dataclass
class Difference:
    """One field (or one parameter's figure) that two paired steps disagree on."""

    field: str
    a: Any
    b: Any
    param: str | None = None

    @property
    def rel(self) -> float | None:
        return rel_diff(self.a, self.b)

    @property
    def size(self) -> float:
        """For ranking: the relative difference; a missing or non-finite value against a number ranks first."""
        rel = self.rel
        return math.inf if rel is None else rel

    def to_json(self) -> dict[str, Any]:
        data = {"field": self.field, "a": self.a, "b": self.b, "rel_diff": self.rel}
        if self.param is not None:
            data["param"] = self.param
        return data


_step_values = operator.attrgetter("calls", "backward_calls", "skipped", "loss", "grad_norm", "group_grad_norms", "lr")


def differing_fields(ra: StepRecord, rb: StepRecord, tol: Tolerance, renamed: frozenset[str]) -> list[str]:
    """The fields two steps paired by (optimizer, step) disagree on; ``renamed`` parameters are skipped.

    Cheap, and keeps no values: `step_differences` gives them for the few steps reported.
    """
    both_detail = ra.is_detail and rb.is_detail
    if _step_values(ra) == _step_values(rb) and (  # equal to the bit, as in most steps of repeated runs
        not both_detail
        or (
            ra.update_ratio == rb.update_ratio
            and ra.param_grad_norms == rb.param_grad_norms
            and ra.param_update_ratios == rb.param_update_ratios
        )
    ):
        return []
    checks = [
        ("calls", ra.calls == rb.calls),
        ("backward_calls", ra.backward_calls == rb.backward_calls),
        ("skipped", ra.skipped == rb.skipped),
        ("loss", tol.close(ra.loss, rb.loss)),
        ("grad_norm", tol.close(ra.grad_norm, rb.grad_norm)),
        ("group_grad_norms", tol.close_lists(ra.group_grad_norms, rb.group_grad_norms)),
        ("lr", tol.close_lists(ra.lr, rb.lr)),
    ]
    if both_detail:
        checks.append(("update_ratio", tol.close(ra.update_ratio, rb.update_ratio)))
        checks += [
            (name, next(_differing_params(getattr(ra, name), getattr(rb, name), tol, renamed), None) is None)
            for name in PARAM_FIELDS
        ]
    return [name for name, same in checks if not same]


def step_differences(
    ra: StepRecord, rb: StepRecord, fields: list[str], tol: Tolerance, renamed: frozenset[str]
) -> list[Difference]:
    """Both values of every differing field; for a parameter field, one per differing parameter."""
    found = []
    for name in fields:
        a, b = getattr(ra, name), getattr(rb, name)
        if name in PARAM_FIELDS:
            a, b = a or {}, b or {}
            found += [Difference(name, a.get(p), b.get(p), p) for p in _differing_params(a, b, tol, renamed)]
        else:
            found.append(Difference(name, a, b))
    return found


def _differing_params(
    a: dict[str, float | None] | None, b: dict[str, float | None] | None, tol: Tolerance, renamed: frozenset[str]
) -> Iterator[str]:
    if a == b:
        return
    a, b = a or {}, b or {}
    names = a.keys() if a.keys() == b.keys() else (a.keys() | b.keys()) - renamed
    for name in names:
        if not tol.close(a.get(name), b.get(name)):
            yield name


# --- reading both traces in lockstep -----------------------------------------


class Side:
    """One trace being read, through its whole view: its step records one at a time, and what
    else it said on the way."""

    def __init__(self, trace: Trace) -> None:
        self.view = TraceView(trace, StepFilter())
        self._records = iter(self.view)
        self.done = False
        self.optimizers: dict[int | None, OptimizerInfo] = {}
        self.steps: dict[int | None, int] = {}
        self.last_step: dict[int | None, int] = {}
        self.new_optimizer = False  # set when a step of an optimizer not seen before is read
        self.pending: dict[int | None, deque[StepRecord]] = {}
        self.lone: dict[int | None, list[int]] = {}  # per optimizer: [count, first step]
        self.anomalies: dict[str, int] = {}  # rule: first step

    def read(self) -> StepRecord | None:
        """The next step record, or None at the end (then ``done``)."""
        for record in self._records:
            if isinstance(record, StepRecord):
                count = self.steps.get(record.optimizer)
                if count is None:
                    self.new_optimizer, count = True, 0
                self.steps[record.optimizer] = count + 1
                self.last_step[record.optimizer] = record.step
                return record
            if isinstance(record, OptimizerInfo):
                self.optimizers[record.optimizer] = record
            elif isinstance(record, Anomaly):
                self.anomalies.setdefault(record.rule, record.step)
        self.done = True
        return None

    def alone(self, record: StepRecord) -> None:
        """Count a step the other trace does not have."""
        counted = self.lone.setdefault(record.optimizer, [0, record.step])
        counted[0] += 1

    @property
    def read_steps(self) -> int:
        return self.view.steps

    def run_info(self) -> RunInfo:
        return self.view.run_info()


class Lockstep:
    """Decides which trace to read next: the one behind on the optimizers both have reached."""

    def __init__(self, a: Side, b: Side) -> None:
        self.a, self.b = a, b
        self.common: list[int | None] = []

    def next_side(self) -> Side:
        a, b = self.a, self.b
        if a.done or b.done:
            return b if a.done else a
        if a.new_optimizer or b.new_optimizer:
            a.new_optimizer = b.new_optimizer = False
            self.common = list(a.last_step.keys() & b.last_step.keys())
        if not self.common:
            return a if a.read_steps <= b.read_steps else b
        behind_a = min(map(a.last_step.__getitem__, self.common))
        return a if behind_a <= min(map(b.last_step.__getitem__, self.common)) else b


def paired_steps(a: Side, b: Side) -> Iterator[tuple[StepRecord, StepRecord]]:
    """Yield (A's step, B's step) for every (optimizer, step) both traces have, in about file order."""
    lockstep = Lockstep(a, b)
    while not (a.done and b.done):
        side = lockstep.next_side()
        record = side.read()
        if record is None:
            continue
        other = b if side is a else a
        mine = side.pending.setdefault(record.optimizer, deque())
        theirs = other.pending.setdefault(record.optimizer, deque())
        mine.append(record)
        while mine and theirs:
            if mine[0].step == theirs[0].step:
                pair = (mine.popleft(), theirs.popleft())
                yield pair if side is a else (pair[1], pair[0])
            elif mine[0].step < theirs[0].step:
                side.alone(mine.popleft())
            else:
                other.alone(theirs.popleft())
        if len(mine) > PENDING_LIMIT:
            side.alone(mine.popleft())
    for side in (a, b):
        for queue in side.pending.values():
            for record in queue:
                side.alone(record)


# --- the comparison ----------------------------------------------------------


_read_times = operator.itemgetter(*TIMED)


def _times(record: StepRecord) -> tuple[float, ...]:
    """The step's time per phase, in TIMED order; 0 for a phase the record lacks."""
    try:
        values = _read_times(record.time)
    except KeyError:
        values = tuple(record.time.get(phase) for phase in TIMED)
    return values if None not in values else tuple(value or 0.0 for value in values)


@dataclass
class FieldCount:
    first: tuple[int | None, int]
    steps: int = 0


@dataclass
class StepDifferences:
    """The differences found at one step: where, and what."""

    optimizer: int | None
    step: int
    differences: list[Difference]

    @property
    def fields(self) -> list[Difference]:
        """One entry per field; for a parameter field, its largest difference."""
        fields: dict[str, Difference] = {}
        for diff in self.differences:
            kept = fields.get(diff.field)
            if kept is None or diff.size > kept.size:
                fields[diff.field] = diff
        return sorted(fields.values(), key=lambda d: FIELDS.index(d.field))

    def params(self, field_name: str = "param_grad_norms") -> list[Difference]:
        """The parameters that differ most (by relative difference), largest first."""
        found = [d for d in self.differences if d.field == field_name]
        found.sort(key=lambda d: d.size, reverse=True)
        return found[:TOP_PARAMS]

    def count(self, field_name: str) -> int:
        return sum(1 for d in self.differences if d.field == field_name)

    def to_json(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer,
            "step": self.step,
            "fields": [
                {**d.to_json(), "params_differing": self.count(d.field)} if d.param is not None else d.to_json()
                for d in self.fields
            ],
            "params": [d.to_json() for d in self.params()],
        }


class Comparison:
    """Folds every paired step into counts, the first difference and per-phase times."""

    def __init__(self, tol: Tolerance, ignore: frozenset[str] = frozenset()) -> None:
        self.tol = tol
        self.ignore = ignore
        """Fields never counted as differences (``--ignore``)."""
        self.compared = 0
        self.differing = 0
        self.fields: dict[str, FieldCount] = {}
        self.first: StepDifferences | None = None
        self.first_params: StepDifferences | None = None
        self.last: dict[int | None, tuple[int, bool]] = {}  # per optimizer: last common step, agreed
        self.times_a, self.times_b = floats(), floats()  # len(TIMED) values a step, phase by phase

    def add(self, ra: StepRecord, rb: StepRecord, renamed: frozenset[str]) -> None:
        self.compared += 1
        self.times_a.extend(_times(ra))
        self.times_b.extend(_times(rb))
        fields = differing_fields(ra, rb, self.tol, renamed)
        if self.ignore and fields:
            fields = [name for name in fields if name not in self.ignore]
        self.last[ra.optimizer] = (ra.step, not fields)
        if not fields:
            return
        self.differing += 1
        for name in fields:
            counted = self.fields.get(name)
            if counted is None:
                counted = self.fields[name] = FieldCount((ra.optimizer, ra.step))
            counted.steps += 1
        params_differ = self.first_params is None and "param_grad_norms" in fields
        if self.first is None or params_differ:
            here = StepDifferences(ra.optimizer, ra.step, step_differences(ra, rb, fields, self.tol, renamed))
            self.first = self.first or here
            self.first_params = here if params_differ else self.first_params

    @property
    def ignored(self) -> list[str]:
        """The ``--ignore`` fields, in `FIELDS` order."""
        return sorted(self.ignore, key=FIELDS.index)

    @property
    def reconverged(self) -> bool | None:
        """Whether every optimizer's last common step agrees again; None when nothing differed."""
        if not self.differing:
            return None
        return all(agreed for _, agreed in self.last.values())

    def timing(self) -> dict[str, dict[str, float | None]]:
        """Per phase: median seconds per step in A and B, and B/A (None where A's is 0: a
        phase A never spends time in, such as zero_grad in a loop that never calls it)."""
        result = {}
        for index, phase in enumerate(TIMED):
            ma = median(self.times_a[index :: len(TIMED)])
            mb = median(self.times_b[index :: len(TIMED)])
            ratio = mb / ma if ma and mb is not None else None
            result[phase] = {"a": ma, "b": mb, "ratio": ratio if is_finite(ratio) else None}
        return result


# --- structure: what is not a per-step value ---------------------------------


def _step_span(side: Side, index: int | None) -> str:
    count = side.steps.get(index, 0)
    return f"{count} steps (to step {side.last_step[index]})" if count else "no steps"


def structure_differences(a: Side, b: Side, run_a: RunInfo, run_b: RunInfo) -> list[str]:
    """Differences beyond per-step values: optimizers, parameter names, step counts, the ending."""
    found = []
    indices = sorted(a.optimizers.keys() | b.optimizers.keys() | a.steps.keys() | b.steps.keys(), key=_order)
    for index in indices:
        label = f"optimizer {optimizer_label(index)}"
        in_a, in_b = index in a.optimizers or index in a.steps, index in b.optimizers or index in b.steps
        if not (in_a and in_b):
            found.append(f"{label} is only in {'A' if in_a else 'B'}")
            continue
        changes = _optimizer_differences(a.optimizers.get(index), b.optimizers.get(index))
        found += [f"{label}: {text}" for text in changes]
        lone = [
            f"{side.lone[index][0]} only in {name} (from step {side.lone[index][1]})"
            for name, side in (("A", a), ("B", b))
            if index in side.lone
        ]
        if lone:
            found.append(f"{label}: A has {_step_span(a, index)}, B has {_step_span(b, index)}; {'; '.join(lone)}")
    if run_a.outcome != run_b.outcome:
        found.append(f"the runs ended differently: A {run_a.outcome}; B {run_b.outcome}")
    return found


def _order(index: int | None) -> int:
    return -1 if index is None else index


def _optimizer_differences(info_a: OptimizerInfo | None, info_b: OptimizerInfo | None) -> list[str]:
    if info_a is None or info_b is None:
        return []
    found = []
    if info_a.cls != info_b.cls:
        found.append(f"{info_a.cls} in A, {info_b.cls} in B")
    names_a, names_b = set(info_a.param_names), set(info_b.param_names)
    if names_a != names_b:
        parts = [
            f"only in {side}: {listing(sorted(names), NAMES_LISTED)}"
            for side, names in (("A", names_a - names_b), ("B", names_b - names_a))
            if names
        ]
        found.append(f"parameter names differ ({'; '.join(parts)})")
    elif [g.params for g in info_a.groups] != [g.params for g in info_b.groups]:
        groups = f"{len(info_a.groups)} groups in A, {len(info_b.groups)} in B"
        found.append(f"the same parameters, grouped differently ({groups})")
    return found


def _renamed(a: Side, b: Side, index: int | None) -> frozenset[str]:
    """Parameter names only one optimizer record has: reported once, not at every step."""
    info_a, info_b = a.optimizers.get(index), b.optimizers.get(index)
    if info_a is None or info_b is None:
        return frozenset()
    return frozenset(set(info_a.param_names) ^ set(info_b.param_names))


def _first_at(step: int | None) -> str:
    return "none" if step is None else f"from step {step}"


def run_notes(a: Side, b: Side, run_a: RunInfo, run_b: RunInfo) -> list[str]:
    """What differs between the runs without making them differ."""
    found = []
    for what, va, vb in (("torch", run_a.torch, run_b.torch), ("device", run_a.device, run_b.device)):
        if va != vb:
            found.append(f"{what}: {va} in A, {vb} in B")
    if run_a.every != run_b.every:
        found.append(
            f"per-parameter detail every {run_a.every} steps in A, {run_b.every} in B: compared on the steps both have"
        )
    for rule in sorted(a.anomalies.keys() | b.anomalies.keys()):
        sa, sb = a.anomalies.get(rule), b.anomalies.get(rule)
        if sa != sb:
            found.append(f"anomaly {rule}: {_first_at(sa)} in A, {_first_at(sb)} in B")
    return found


@dataclass
class DiffResult:
    run_a: RunInfo
    run_b: RunInfo
    tol: Tolerance
    comparison: Comparison
    structure: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    several: bool = False  # more than one optimizer: name it in step labels

    @property
    def exit_code(self) -> int:
        return exit_codes.DIFFER if self.comparison.differing or self.structure else exit_codes.OK

    def where(self, optimizer: int | None, step: int) -> str:
        return step_label(optimizer, step, self.several)


def compare_traces(
    path_a: str | Path, path_b: str | Path, tol: Tolerance, ignore: frozenset[str] = frozenset()
) -> DiffResult:
    """Read both traces once, side by side, and gather everything the report says;
    the ``ignore`` fields (of `FIELDS`) are never counted."""
    a, b = Side(Trace(path_a)), Side(Trace(path_b))
    comparison = Comparison(tol, ignore)
    renamed: dict[int | None, frozenset[str]] = {}
    for ra, rb in paired_steps(a, b):
        names = renamed.get(ra.optimizer)
        if names is None:
            names = renamed[ra.optimizer] = _renamed(a, b, ra.optimizer)
        comparison.add(ra, rb, names)
    if not a.read_steps and not b.read_steps:
        raise ValueError(f"neither {path_a} nor {path_b} has any steps: nothing to compare")
    run_a, run_b = a.run_info(), b.run_info()
    return DiffResult(
        run_a,
        run_b,
        tol,
        comparison,
        structure=structure_differences(a, b, run_a, run_b),
        notes=run_notes(a, b, run_a, run_b),
        several=len(a.steps.keys() | b.steps.keys()) > 1,
    )

"""``stepdbg show --format csv`` (``--csv``), ``stepdbg export --to csv`` and ``stepdbg.load().to_pandas()``:
a trace's view as one table.

One row per step; with ``--anomalies`` one per rule and optimizer; with ``--param``
one per (detail step, matching parameter). Rows are streamed from the view as it is
read, so the table needs nothing collected. The columns are listed in
docs/trace-format.md.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, TextIO

from ..anomaly_view import Firing
from ..memory import step_memory
from ..schema import PHASES, OptimizerInfo, StepRecord
from ..view import ParamMatcher, TraceView
from .output import Output

if TYPE_CHECKING:
    from ..show import ShowOptions

TIMES = (*PHASES, "total")
STEP_COLUMNS = [
    "optimizer",
    "step",
    "t",
    "loss",
    "grad_norm",
    "lr",
    *(f"time_{name}" for name in TIMES),
    "backward_calls",
    "skipped",
    "calls",
    "memory",
    "memory_peak",
]
ANOMALY_FIELDS = ["rule", "severity", "step", "optimizer", "param", "message", "hint", "t"]
ANOMALY_COLUMNS = [*ANOMALY_FIELDS, "count", "steps_in_view"]
PARAM_COLUMNS = ["optimizer", "step", "param", "grad_norm", "update_ratio"]


def step_row(record: StepRecord) -> list[Any]:
    """csv writes None as an empty cell and floats exactly (``repr``); NaN as ``nan``, which pandas reads."""
    lr: Any = record.lr[0] if len(record.lr) == 1 else ";".join("" if v is None else repr(v) for v in record.lr)
    memory = step_memory(record.memory)
    return [
        record.optimizer,
        record.step,
        record.t,
        record.loss,
        record.grad_norm,
        lr,
        *map(record.time.get, TIMES),
        record.backward_calls,
        record.skipped,
        " ".join(record.calls),
        memory[1] if memory else None,
        (record.memory or {}).get("peak"),
    ]


def step_rows(view: TraceView) -> Iterator[list[Any]]:
    """A row per step record in view, in `STEP_COLUMNS`."""
    for record in view:
        if isinstance(record, StepRecord):
            yield step_row(record)


def param_rows(view: TraceView, params: ParamMatcher) -> Iterator[list[Any]]:
    """A row per matching parameter of each detail step in view, in `PARAM_COLUMNS`."""
    for record in view:
        if isinstance(record, OptimizerInfo):
            for name in record.param_names:  # a name no step has a norm for still counts as matched
                params(name)
        elif isinstance(record, StepRecord) and record.param_grad_norms is not None:
            ratios = record.param_update_ratios or {}
            for name, norm in record.param_grad_norms.items():
                if params(name):
                    yield [record.optimizer, record.step, name, norm, ratios.get(name)]


def anomaly_rows(view: TraceView) -> Iterator[list[Any]]:
    """A row per rule and optimizer in view, in `ANOMALY_COLUMNS`: the steps a rule fired at
    come after its report, so the rows wait for the trace's end."""
    for _ in view:
        pass
    yield from map(_anomaly_row, view.anomalies.firings(view.trace.end))


def _anomaly_row(firing: Firing) -> list[Any]:
    """A rule's first report on an optimizer; how often it fired, and at how many steps in view
    (empty where the trace does not say)."""
    in_view = firing.in_view.steps if firing.in_view is not None else 0
    row = [getattr(firing.report, column) for column in ANOMALY_FIELDS]
    return [*row, firing.count if firing.located else None, in_view if firing.located else None]


def write_table(view: TraceView, out: TextIO, anomalies_only: bool = False, param: str | None = None) -> None:
    """The view's table on ``out``: its steps, its anomalies, or the parameters matching ``param``."""
    if anomalies_only and param is not None:
        raise ValueError("--format csv (--csv) writes one table: use --anomalies or --param, not both")
    writer = csv.writer(out, lineterminator="\n")
    if anomalies_only:
        writer.writerow(ANOMALY_COLUMNS)
        writer.writerows(anomaly_rows(view))
    elif param is not None:
        params = ParamMatcher(param)
        writer.writerow(PARAM_COLUMNS)
        writer.writerows(param_rows(view, params))
        params.check()
    else:
        writer.writerow(STEP_COLUMNS)
        writer.writerows(step_rows(view))


def write(view: TraceView, options: ShowOptions, out: Output) -> None:
    write_table(view, out.data, options.anomalies_only, options.param)

"""`stepdbg export --to tensorboard`: traces as TensorBoard event files, through tensorboard's own writer.

One run directory per trace (``LOGDIR/train.rank0``). Each step record is one event
at its step, holding every scalar of that step (tags below; ``N`` the optimizer's
index, ``none`` for a loop with no optimizer); anomalies are text, under their rule.
Only the ``tensorboard`` package is used (its event writer and protos), never torch
or TensorFlow, so the reading side stays light.

- ``loss/optimizer_N``, ``grad_norm/optimizer_N``, ``grad_norm/optimizer_N/group_G``,
  ``lr/optimizer_N/group_G``, ``time/optimizer_N/PHASE`` (seconds; ``total`` too);
- on detail steps: ``update_ratio/optimizer_N``, and per parameter
  ``param_grad_norm/NAME`` and ``param_update_ratio/NAME``;
- ``anomalies/RULE``: the message and the hint, at the step where it fired.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..extras import require
from ..run_info import start_time, trace_labels
from ..schema import Anomaly, StepRecord
from ..style import optimizer_label
from ..tracefile import Trace
from ..view import ParamMatcher, StepFilter, TraceView

EVENT_FILES = "events.out.tfevents.*"
QUEUED_EVENTS = 1024
"""Events tensorboard's writer queues for its thread (its default, 10, makes the reader wait on it)."""


def scalar_tags(record: StepRecord, params: ParamMatcher | None) -> list[tuple[str, float]]:
    """``(tag, value)`` for every scalar of a step record; nulls are left out, NaN and Inf kept."""
    who = f"optimizer_{optimizer_label(record.optimizer)}"
    found: list[tuple[str, Any]] = [("loss/" + who, record.loss), ("grad_norm/" + who, record.grad_norm)]
    found += [(f"grad_norm/{who}/group_{g}", norm) for g, norm in enumerate(record.group_grad_norms)]
    found += [(f"lr/{who}/group_{g}", lr) for g, lr in enumerate(record.lr)]
    found += [(f"time/{who}/{phase}", seconds) for phase, seconds in record.time.items()]
    if record.param_grad_norms is not None:
        found.append(("update_ratio/" + who, record.update_ratio))
        ratios = record.param_update_ratios or {}
        for name, norm in record.param_grad_norms.items():
            if params is None or params(name):
                found += [("param_grad_norm/" + name, norm), ("param_update_ratio/" + name, ratios.get(name))]
    return [(tag, value) for tag, value in found if value is not None]


def anomaly_text(anomaly: Anomaly) -> str:
    """Markdown, as TensorBoard's text plugin renders it."""
    where = f"optimizer {optimizer_label(anomaly.optimizer)}, step {anomaly.step}"
    param = f", parameter `{anomaly.param}`" if anomaly.param else ""
    fix = f"\n\nFix: {anomaly.hint}" if anomaly.hint else ""
    return f"**{anomaly.rule}** ({anomaly.severity}, {where}{param}): {anomaly.message}{fix}"


def write_tensorboard(
    paths: Sequence[Path], step_filter: StepFilter, logdir: Path, param: str | None = None
) -> list[Path]:
    """Write each trace into a run directory of its own under ``logdir``; returns them.

    Every trace is opened first, and a run directory that already holds events is
    refused (TensorBoard would show both files' points as one run), before anything
    is written; a trace that fails half-way leaves no event file behind.
    """
    require("tensorboard", "stepdbg export --to tensorboard", "tensorboard")
    traces = [Trace(path) for path in paths]
    runs = [logdir / label for label in trace_labels(paths)]
    for run in runs:
        if run.is_dir() and any(run.glob(EVENT_FILES)):
            raise ValueError(f"{run} already holds TensorBoard events: remove them, or give another -o")
    for trace, run in zip(traces, runs):
        try:
            _write_run(trace, run, step_filter, ParamMatcher(param) if param is not None else None)
        except BaseException:
            for written in run.glob(EVENT_FILES):  # none were there before: all are this run's
                written.unlink()
            raise
    return runs


def _write_run(trace: Trace, run: Path, step_filter: StepFilter, params: ParamMatcher | None) -> None:
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.plugins.text.summary_v2 import text_pb
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    origin = start_time(trace.header.start) or 0.0
    texts: dict[tuple[str, int], tuple[float, list[str]]] = {}  # one text per rule and step, written last
    writer = EventFileWriter(str(run), max_queue_size=QUEUED_EVENTS)
    try:
        for record in TraceView(trace, step_filter):
            if isinstance(record, StepRecord):
                values = [Summary.Value(tag=tag, simple_value=value) for tag, value in scalar_tags(record, params)]
                writer.add_event(Event(wall_time=origin + record.t, step=record.step, summary=Summary(value=values)))
            elif isinstance(record, Anomaly):
                texts.setdefault((record.rule, record.step), (origin + record.t, []))[1].append(anomaly_text(record))
        for (rule, step), (wall_time, found) in texts.items():
            summary = text_pb(f"anomalies/{rule}", "\n\n".join(found))
            writer.add_event(Event(wall_time=wall_time, step=step, summary=summary))
    finally:
        writer.close()
    if params is not None:
        params.check()

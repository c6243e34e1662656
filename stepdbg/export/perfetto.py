"""`stepdbg export --to perfetto`: traces as a Chrome Trace Event file, for ui.perfetto.dev and chrome://tracing.

One process per trace (per rank, for the traces of a distributed run), one thread
track per optimizer. On it each step record is a slice ``step N`` holding its
phases (`timeline`); loss, grad norm and each group's lr are counter tracks; each
anomaly is an instant event on its optimizer's track, with its message. Times are
microseconds: since the run started, or, for the ranks of one distributed run,
since the earliest rank started, so that the ranks line up on the wall clock.

Events are written as they are made, never held: a long trace streams through.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import orjson

from ..run_info import ranks_of_one_run, start_time, trace_labels
from ..schema import Anomaly, OptimizerInfo, StepRecord
from ..tracefile import Trace, TraceError
from ..view import StepFilter, TraceView
from .timeline import iteration_slices, iteration_start

MICROSECONDS = 1e6
NO_OPTIMIZER_TID = 1
"""Thread ids: 1 for a loop with no optimizer, 2 + N for optimizer N (0 is no thread to some viewers)."""


def optimizer_tid(optimizer: int | None) -> int:
    return NO_OPTIMIZER_TID if optimizer is None else optimizer + 2


def _finite(value: float | None) -> float | None:
    """JSON has no NaN: a non-finite value is left out of counters and shown as null in arguments."""
    return value if value is not None and math.isfinite(value) else None


class TraceEvents:
    """The one JSON object of a Chrome trace, written event by event."""

    def __init__(self, file: IO[bytes]) -> None:
        self.file = file
        self.count = 0
        file.write(b'{"traceEvents":[\n')

    def add(self, event: dict[str, Any]) -> None:
        if self.count:
            self.file.write(b",\n")
        self.file.write(orjson.dumps(event))
        self.count += 1

    def close(self, other: dict[str, Any]) -> None:
        self.file.write(b'\n],"displayTimeUnit":"ms","otherData":' + orjson.dumps(other) + b"}\n")


class ProcessEvents:
    """The events of one trace: its process, its optimizers' tracks, steps, counters and anomalies."""

    def __init__(self, out: TraceEvents, pid: int, origin: float) -> None:
        self.out = out
        self.pid = pid
        self.origin = origin  # microseconds added to every time of this trace
        self.named: set[int | None] = set()

    def at(self, seconds: float) -> float:
        return round(self.origin + seconds * MICROSECONDS, 3)

    def metadata(self, name: str, tid: int, args: dict[str, Any]) -> None:
        self.out.add({"ph": "M", "name": name, "pid": self.pid, "tid": tid, "args": args})

    def process(self, name: str, sort_index: int) -> None:
        self.metadata("process_name", 0, {"name": name})
        self.metadata("process_sort_index", 0, {"sort_index": sort_index})

    def optimizer(self, optimizer: int | None, cls: str | None = None) -> None:
        """Name the optimizer's track, once (and again with its class when its record comes)."""
        if optimizer in self.named and cls is None:
            return
        self.named.add(optimizer)
        tid = optimizer_tid(optimizer)
        name = "no optimizer" if optimizer is None else f"optimizer {optimizer}"
        self.metadata("thread_name", tid, {"name": f"{name} · {cls}" if cls else name})
        self.metadata("thread_sort_index", tid, {"sort_index": tid})

    def step(self, record: StepRecord) -> None:
        self.optimizer(record.optimizer)
        tid = optimizer_tid(record.optimizer)
        start = iteration_start(record)
        self.out.add(
            {
                "ph": "X",
                "name": f"step {record.step}",
                "cat": "step",
                "pid": self.pid,
                "tid": tid,
                "ts": self.at(start),
                "dur": round(record.time.get("total", 0.0) * MICROSECONDS, 3),
                "args": {
                    "loss": _finite(record.loss),
                    "grad_norm": _finite(record.grad_norm),
                    "lr": [_finite(lr) for lr in record.lr],
                    "calls": " ".join(record.calls),
                    "backward_calls": record.backward_calls,
                    "skipped": record.skipped,
                },
            }
        )
        for piece in iteration_slices(record):
            self.out.add(
                {
                    "ph": "X",
                    "name": piece.name,
                    "cat": "phase",
                    "pid": self.pid,
                    "tid": tid,
                    "ts": self.at(piece.start),
                    "dur": round(piece.duration * MICROSECONDS, 3),
                }
            )
        self._counters(record)

    def _counters(self, record: StepRecord) -> None:
        """Loss, grad norm and lr at the step's end: one counter track each (a name per track, so
        that chrome://tracing does not stack them), for each optimizer."""
        who = "no optimizer" if record.optimizer is None else f"optimizer {record.optimizer}"
        values = [("loss", record.loss), ("grad norm", record.grad_norm)]
        several = len(record.lr) > 1
        values += [(f"lr group {group}" if several else "lr", lr) for group, lr in enumerate(record.lr)]
        ts = self.at(record.t)
        for name, value in values:
            if _finite(value) is not None:
                event = {"ph": "C", "name": f"{who} · {name}", "pid": self.pid, "ts": ts, "args": {"value": value}}
                self.out.add(event)

    def anomaly(self, anomaly: Anomaly) -> None:
        self.optimizer(anomaly.optimizer)
        self.out.add(
            {
                "ph": "i",
                "s": "t",
                "name": anomaly.rule,
                "cat": "anomaly",
                "pid": self.pid,
                "tid": optimizer_tid(anomaly.optimizer),
                "ts": self.at(anomaly.t),
                "args": {
                    "severity": anomaly.severity,
                    "step": anomaly.step,
                    "param": anomaly.param,
                    "message": anomaly.message,
                    "hint": anomaly.hint,
                },
            }
        )


def _origins(traces: Sequence[Trace]) -> list[float]:
    """Microseconds to add to each trace's times: the ranks of one run on the wall clock, others from 0."""
    starts = [start_time(trace.header.start) for trace in traces]
    if not ranks_of_one_run(traces) or None in starts:
        return [0.0] * len(traces)
    first = min(s for s in starts if s is not None)
    return [((s or first) - first) * MICROSECONDS for s in starts]


def write_perfetto(paths: Sequence[Path], step_filter: StepFilter, out: Path) -> int:
    """Write the traces at ``paths`` as one Chrome trace at ``out``; returns the number of events.

    Every trace is opened (its header read) before ``out`` is created, so that a
    missing or foreign file leaves nothing behind; nor does one that fails half-way.
    """
    traces = [Trace(path) for path in paths]
    with open(out, "wb") as file:
        try:
            return _write(traces, trace_labels(paths), step_filter, TraceEvents(file))
        except BaseException:
            out.unlink()  # half a JSON object opens nowhere
            raise


def _write(traces: Sequence[Trace], labels: Sequence[str], step_filter: StepFilter, events: TraceEvents) -> int:
    for index, (trace, label, origin) in enumerate(zip(traces, labels, _origins(traces))):
        process = ProcessEvents(events, index + 1, origin)
        rank = trace.header.rank
        process.process(label if rank is None else f"rank {rank} · {label}", index if rank is None else rank)
        for record in TraceView(trace, step_filter):
            if isinstance(record, StepRecord):
                try:
                    process.step(record)
                except TypeError as e:
                    raise TraceError(f"{trace.path}: optimizer {record.optimizer} step {record.step}: {e}") from None
            elif isinstance(record, OptimizerInfo):
                process.optimizer(record.optimizer, record.cls)
            elif isinstance(record, Anomaly):
                process.anomaly(record)
    events.close({"stepdbg": [trace.header.stepdbg for trace in traces], "traces": [str(t.path) for t in traces]})
    return events.count

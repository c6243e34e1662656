"""Phase times of a loop that runs on CUDA: what the device spent, from events, without a sync.

On CUDA the host only queues kernels: the host's clock times a phase's launches,
and the device's work shows up in whichever phase next waits for it. Once the
loop is seen on CUDA, the collector also records an event at each phase boundary
(`DeviceClock.mark`); a step record keeps its iteration's events (`DevicePhases`)
and is completed once the last one has happened on the device, when
``elapsed_time`` reads their times without waiting. Until then (the loop's first
iteration), or where events cannot be compared (work moved to another device),
the record keeps the host's times.

Each event is a call into the CUDA driver on the host, on every step: a record
ends right after a phase does (the step, or a backward in a loop with no
optimizer), and the event that ends the phase ends the iteration too, so an
ordinary iteration records six (a start and an end for zero_grad, backward and
step). What stepdbg itself queues after it (a detail step's update sizes, the copy
of the step's values for reading) is counted in the next iteration's time, on the
device as on the host (where it is ``overhead``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .schema import PHASES

TIMED_PHASES = tuple(phase for phase in PHASES if phase != "forward")
"""The phases measured between events; ``forward`` is what is left of the total."""


def capturing() -> bool:
    """Whether the current CUDA stream is being captured into a CUDA graph (``torch.cuda.graph``):
    work queued now only runs at the graph's replays, where no Python (no hook) runs, and
    what stepdbg would queue or record now would become part of the user's graph."""
    import torch

    return torch.cuda.is_initialized() and bool(torch.cuda.is_current_stream_capturing())


def record_on(event: Any, index: int | None) -> None:
    """Record ``event`` on the current stream of CUDA device ``index``, where the loop's work
    is queued: not the current device where a model was moved to ``cuda:1`` without
    ``torch.cuda.set_device`` (an event there would be done before the work is)."""
    import torch

    if index is None or index == torch.cuda.current_device():
        event.record()
    else:
        with torch.cuda.device(index):
            event.record()


def cuda_event(index: int | None) -> Any:
    """A timing event recorded now on device ``index``'s current stream (no sync); None while
    the stream is being `capturing` (a timing event would break the capture)."""
    import torch

    if capturing():
        return None
    # torch.Event, not torch.cuda.Event: its record() finds the current stream in C++, where
    # torch.cuda.Event's asks Python's torch.cuda.current_stream() (7 events a step: 0.1 ms)
    event = torch.Event("cuda", enable_timing=True)
    record_on(event, index)
    return event


@dataclass(slots=True)
class Interval:
    """One phase between two events; ``inner`` are phases inside it, timed apart (a closure's
    backward inside a step)."""

    phase: str
    start: Any
    end: Any
    inner: list[Interval] = field(default_factory=list)


@dataclass(slots=True)
class DevicePhases:
    """An iteration's events: from the previous record's end to this one's."""

    start: Any
    end: Any
    intervals: list[Interval]

    def ready(self) -> bool:
        return bool(self.end.query())

    def seconds(self, overhead: float) -> dict[str, float] | None:
        """The record's ``time`` from the device's clock (``overhead``, stepdbg's own, stays
        the host's); None where the events cannot be compared."""
        try:
            total = _seconds(self.start, self.end)
            spent = dict.fromkeys(TIMED_PHASES, 0.0)
            for interval in self.intervals:
                inner = sum(_seconds(i.start, i.end) for i in interval.inner)
                spent[interval.phase] += max(0.0, _seconds(interval.start, interval.end) - inner)
        except RuntimeError:  # events on different devices, or one never recorded
            return None
        forward = max(0.0, total - sum(spent.values()) - overhead)
        return {**spent, "forward": forward, "overhead": overhead, "total": total}


def _seconds(start: Any, end: Any) -> float:
    return float(start.elapsed_time(end)) / 1000.0


class DeviceClock:
    """Events at the phase boundaries, once the loop runs on CUDA (or always, with
    ``make_event``: tests stand in for CUDA with their own events)."""

    def __init__(self, make_event: Callable[[], Any] | None = None) -> None:
        self._make_event = make_event
        self.on = make_event is not None
        """Whether events are recorded: callers test it first, so a loop on the CPU pays nothing more."""
        self.intervals: list[Interval] = []
        """This iteration's phases so far."""
        self._last_end: Any = None
        self._phase_end: Any = None
        """The end of the phase that `close` ended last, while no event was recorded since:
        the iteration's end too, if the record ends now (`finish`)."""

    def start_timing(self, index: int | None) -> None:
        """The loop runs on CUDA device ``index``: from the next boundary on, record events."""
        if self._make_event is None:
            self._make_event = functools.partial(cuda_event, index)
        self.on = True

    def mark(self) -> Any:
        """An event recorded now (`on` only), or None where none can be recorded now."""
        assert self._make_event is not None
        self._phase_end = None
        return self._make_event()

    def close(self, phase: str, start: Any, inner_from: int | None = None) -> None:
        """The phase begun at ``start`` (a `mark`) ends now; phases recorded since position
        ``inner_from`` of `intervals` happened inside it."""
        if start is None:
            return
        end = self.mark()
        if end is None:
            self._last_end = None  # this iteration cannot be timed on the device
            return
        inner = self.intervals[inner_from:] if inner_from is not None else []
        self.intervals.append(Interval(phase, start, end, inner))
        self._phase_end = end

    def finish(self) -> DevicePhases | None:
        """A record ends now: its iteration's events, and the next iteration starts. Called
        right after the `close` of the phase that ends the record, whose end it shares."""
        end = self._phase_end if self._phase_end is not None else self.mark()
        self._phase_end = None
        phases = (
            DevicePhases(self._last_end, end, self.intervals)
            if end is not None and self._last_end is not None
            else None
        )
        self._last_end = end
        self.intervals = []
        return phases

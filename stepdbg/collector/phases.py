"""Where an iteration's time goes, and what it called.

Seconds per timed phase since the previous step record (``forward`` is what is left
of the iteration's total; ``data`` is `data_wait`'s), where each call lay in the
iteration (``spans``, for timelines), the run's totals for the end record, and, once
the loop is seen on CUDA, an event at each phase boundary (`device_clock`); and the
calls the iteration made, as its record lists them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..data_wait import DataWaits
from ..device_clock import DeviceClock, DevicePhases
from ..schema import CALL_BACKWARD, CALL_ELIDED, CALL_REPEAT, CALL_STEP, CALL_ZERO_GRAD, PHASES, StepRecord

HELD_CALLS = 1 << 10
"""A record lists the last this many calls at most, after `CALL_ELIDED`: backward passes made
beside an optimizer that never steps would otherwise add to one list for the whole run."""

HELD_SPANS = HELD_CALLS
"""A record places at most this many calls in time (`StepRecord.spans`); an iteration with more
places none, and a timeline lays its phases end to end."""


@dataclass(slots=True)
class StepTimer:
    """An optimizer step's clock: when it began, and the other phases' seconds then (a closure's
    backward passes and clears run inside the step, and are theirs, not the step's)."""

    start: float = 0.0
    event: Any = None
    intervals: int = 0
    backward: float = 0.0
    zero_grad: float = 0.0
    data: float = 0.0


class PhaseClock:
    """Seconds per phase since the previous step record, and over the run. One object: every
    hook reads and writes several of these, through one attribute of the collector."""

    def __init__(self, clock: Callable[[], float], make_event: Callable[[], Any] | None = None) -> None:
        self.clock = clock
        self.device = DeviceClock(make_event)
        """Phase boundaries as CUDA events, once the loop is seen on CUDA (``make_event``: tests' stand-in)."""
        self.data = DataWaits(clock)
        """The DataLoader waits since the previous step record."""
        self.totals = dict.fromkeys((*PHASES, "overhead"), 0.0)
        """Seconds per phase over the whole run, for the end record."""
        self.backward = 0.0
        self.step = 0.0
        self.zero_grad = 0.0
        self.overhead = 0.0
        """stepdbg's own time in its hooks."""
        self.last_end: float | None = None
        """End of the previous step record; None until the loop's first instrumented call."""
        self._spans: list[str | float] = []
        """Where each call of the iteration lay in time, for timelines (see `_span`)."""
        self._zero_grad_start = 0.0
        self._backward_start = 0.0
        self._zero_grad_event: Any = None
        self._backward_event: Any = None
        self._scaler_event: Any = None
        self._fetch_event: Any = None

    def _span(self, phase: str, start: float, end: float) -> None:
        """Place a call in its iteration: kept as clock readings, made offsets once per record
        (`_placed`), since this runs at every call."""
        spans = self._spans
        if len(spans) <= 3 * HELD_SPANS:
            spans += (phase, start, end)

    def _placed(self, spans: list[str | float]) -> list[str | float] | None:
        """The iteration's calls as `StepRecord.spans`: each one's start from the iteration's,
        and its length, to the microsecond (a timeline's resolution, in fewer digits)."""
        if len(spans) > 3 * HELD_SPANS:
            return None
        base = self.last_end if self.last_end is not None else (spans[1] if spans else 0.0)
        placed: list[str | float] = []
        for index in range(0, len(spans), 3):
            offset = int((spans[index + 1] - base) * 1e6)  # type: ignore[operator]
            placed += (spans[index], offset / 1e6, (int((spans[index + 2] - base) * 1e6) - offset) / 1e6)  # type: ignore[operator]
        return placed

    def now(self) -> float:
        """Now, for an instrumented call: the first one starts the first iteration's clock
        (set-up is not a step)."""
        now = self.clock()
        if self.last_end is None:
            self.last_end = now
        return now

    def zero_grad_started(self, now: float) -> None:
        self._zero_grad_start = now
        if self.device.on:
            self._zero_grad_event = self.device.mark()

    def zero_grad_ended(self) -> float:
        end = self.clock()
        self.zero_grad += end - self._zero_grad_start
        self._span(CALL_ZERO_GRAD, self._zero_grad_start, end)
        if self.device.on:
            self.device.close("zero_grad", self._zero_grad_event)
        return end

    def backward_started(self) -> None:
        self._backward_start = self.clock()
        if self.device.on:
            self._backward_event = self.device.mark()

    def backward_ended(self) -> float:
        end = self.clock()
        self.backward += end - self._backward_start
        self._span(CALL_BACKWARD, self._backward_start, end)
        if self.device.on:
            self.device.close("backward", self._backward_event)
        return end

    def step_started(self, timer: StepTimer, entered: float) -> None:
        """An optimizer step begins (stepdbg's work on it since ``entered`` is overhead)."""
        timer.backward = self.backward
        timer.zero_grad = self.zero_grad
        timer.data = self.data.seconds
        now = self.clock()
        self.overhead += now - entered
        self._span("overhead", entered, now)
        timer.start = now
        if self.device.on:
            timer.event = self.device.mark()
            timer.intervals = len(self.device.intervals)

    def step_ended(self, timer: StepTimer) -> float:
        end = self.clock()
        inner = (self.backward - timer.backward) + (self.zero_grad - timer.zero_grad) + (self.data.seconds - timer.data)
        self.step += end - timer.start - inner
        self._span(CALL_STEP, timer.start, end)
        if self.device.on:
            self.device.close("step", timer.event, timer.intervals)
        return end

    def scaler_step_started(self) -> None:
        if self.device.on:
            self._scaler_event = self.device.mark()

    def scaler_step_skipped(self, started: float) -> float:
        """GradScaler skipped the step it began at ``started``: its time is the step's."""
        end = self.clock()
        self.step += end - started
        self._span(CALL_STEP, started, end)
        if self.device.on:
            self.device.close("step", self._scaler_event)
        return end

    def fetch_started(self, iterator: Any) -> float | None:
        """A DataLoader iterator's ``__next__`` begins: when (None: inside another fetch). A
        loop's first fetch starts its first iteration's clock, as any instrumented call does."""
        started = self.data.start(iterator)
        if started is None:
            return None
        if self.last_end is None:
            self.last_end = started
        if self.device.on:
            self._fetch_event = self.device.mark()
        return started

    def fetch_ended(self, started: float, fetched: bool) -> None:
        event, self._fetch_event = self._fetch_event, None
        ended = self.data.end(started, fetched)
        if ended is None:
            return
        self._span("data", started, ended)
        if event is not None:
            self.device.close("data", event)

    def overhead_after_record(self, end: float) -> None:
        """stepdbg's time finishing the record that ended at ``end``: the next iteration's first."""
        now = self.clock()
        self.overhead += now - end
        self._span("overhead", end, now)

    def record_ended(self, record: StepRecord, end: float) -> bool:
        """The record that ends at ``end`` gets its ``time`` and ``spans``; the phase clocks start
        again. Whether its data wait includes a loader's first workers starting."""
        spans, self._spans = self._spans, []
        record.spans = self._placed(spans)
        total = end - (self.last_end if self.last_end is not None else end)
        self.last_end = end
        data, startup = self.data.take()
        record.time = self._phase_times(total, data)
        return startup

    def _phase_times(self, total: float, data: float) -> dict[str, float]:
        """The ``time`` of a record (``data``: its DataLoader waits)."""
        backward, step, zero_grad, overhead = self.backward, self.step, self.zero_grad, self.overhead
        forward = max(0.0, total - backward - step - zero_grad - overhead - data)
        self.backward = self.step = self.zero_grad = self.overhead = 0.0
        totals = self.totals
        totals["data"] += data
        totals["forward"] += forward
        totals["backward"] += backward
        totals["step"] += step
        totals["zero_grad"] += zero_grad
        totals["overhead"] += overhead
        return {
            "backward": backward,
            "step": step,
            "zero_grad": zero_grad,
            "data": data,
            "forward": forward,
            "overhead": overhead,
            "total": total,
        }

    def retime(self, record: StepRecord, phases: DevicePhases) -> None:
        """A record of a loop on CUDA takes its phase times from the device's clock."""
        seconds = phases.seconds(record.time["overhead"])
        if seconds is None:
            return  # the host's times stay
        for phase in PHASES:
            self.totals[phase] += seconds[phase] - record.time[phase]
        record.time = seconds


class CallLog(list[str]):
    """The calls made since the previous step record, in order (a list: ``append`` is a call)."""

    def __init__(self) -> None:
        super().__init__()
        self._cache: dict[tuple[str, ...], list[str]] = {}

    def append_backward(self) -> None:
        """A backward pass: the one call that can repeat without end (beside an optimizer that
        never steps), so the log keeps the last `HELD_CALLS` at most."""
        self.append(CALL_BACKWARD)
        if len(self) > HELD_CALLS:
            self[:] = [CALL_ELIDED, *self[-(HELD_CALLS // 2) :]]

    def take(self) -> list[str]:
        """The calls, compressed, for the record that ends now; loops repeat the same few
        sequences, so those are cached."""
        key = tuple(self)
        self.clear()
        compressed = self._cache.get(key)
        if compressed is None:
            if len(self._cache) > 256:
                self._cache.clear()
            compressed = self._cache[key] = compress_calls(key)
        return list(compressed)


def compress_calls(calls: Sequence[str]) -> list[str]:
    """``[a, b, b, b]`` -> ``["a", "b×3"]``."""
    result: list[str] = []
    previous, count = None, 0
    for call in [*calls, None]:
        if call == previous:
            count += 1
            continue
        if previous is not None:
            result.append(previous if count == 1 else f"{previous}{CALL_REPEAT}{count}")
        previous, count = call, 1
    return result

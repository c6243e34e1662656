"""Where each phase of an iteration lies in time: the slices a timeline draws for one step record.

A record covers the time from the previous record's end to its own (``t − time.total``
to ``t``). Where it places its calls (``spans``), those are its slices, nested where
one call ran inside another (a closure's calls inside ``step``), and the time between
them is ``forward``. A record that places nothing (a trace from an earlier version)
has its phases laid end to end: stepdbg's time first (finishing the previous record),
then the calls in the order they started, ``forward`` before the first backward,
and any phase no call names just before ``forward``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..schema import CALL_BACKWARD, CALL_ELIDED, CALL_GRAD, CALL_REPEAT, CALL_SCHEDULER, StepRecord

RESOLUTION = 1e-6
"""Spans are placed to the microsecond: a gap shorter than that between them is rounding, not time."""
FORWARD = "forward"
OVERHEAD = "overhead"
NOT_PHASES = frozenset(("total", OVERHEAD, FORWARD))
"""Keys of ``time`` that are no call of their own."""


@dataclass(frozen=True)
class Slice:
    """One phase on the timeline: seconds since the run started; depth 1 lies inside another call."""

    name: str
    start: float
    duration: float
    depth: int = 0


def iteration_start(record: StepRecord) -> float:
    """When the iteration this record covers started, in seconds since the run started."""
    return record.t - record.time.get("total", 0.0)


def iteration_slices(record: StepRecord) -> list[Slice]:
    """The record's phases, in time order (a parent before what lies inside it).

    A malformed ``spans`` raises `TypeError` (see `StepRecord.placed_calls`).
    """
    placed = sorted(record.placed_calls(), key=lambda span: (span[1], -span[2]))
    if placed:
        return _placed(record, placed)
    return _end_to_end(record)


def _placed(record: StepRecord, placed: list[tuple[str, float, float]]) -> list[Slice]:
    """The calls where they were, clipped into the iteration and into whatever call holds them,
    and the gaps between them at the top level, named for the phases no call places."""
    origin, total = iteration_start(record), record.time.get("total", 0.0)
    names = {name for name, _, _ in placed}
    unplaced = [p for p, seconds in record.time.items() if p not in NOT_PHASES and p not in names and seconds > 0]
    gap = "/".join([*unplaced, FORWARD])
    slices: list[Slice] = []
    open_ends: list[float] = []  # ends of the calls holding the next one
    cursor = 0.0  # end of the top-level calls so far
    for name, start, duration in placed:
        start, end = max(start, 0.0), min(start + duration, total)
        while open_ends and open_ends[-1] <= start:
            open_ends.pop()
        if open_ends:
            end = min(end, open_ends[-1])
        if end <= start:
            continue
        if not open_ends:
            if start - cursor >= RESOLUTION:
                slices.append(Slice(gap, origin + cursor, start - cursor))
            cursor = end
        slices.append(Slice(name, origin + start, end - start, len(open_ends)))
        open_ends.append(end)
    if total - cursor >= RESOLUTION:
        slices.append(Slice(gap, origin + cursor, total - cursor))
    return slices


def _end_to_end(record: StepRecord) -> list[Slice]:
    times = record.time
    order = [OVERHEAD]
    for call in record.calls:
        phase = call.partition(CALL_REPEAT)[0]
        if phase in (CALL_SCHEDULER, CALL_ELIDED):
            continue
        if phase == CALL_GRAD:
            phase = CALL_BACKWARD
        if phase == CALL_BACKWARD and FORWARD not in order:
            order.append(FORWARD)
        if phase not in order:
            order.append(phase)
    if FORWARD not in order:
        order.insert(1, FORWARD)
    at = order.index(FORWARD)  # a phase no call names (data waits, say) comes between the calls, before forward
    order[at:at] = [p for p in times if p not in order and p != "total"]
    slices, cursor = [], iteration_start(record)
    for phase in order:
        seconds = times.get(phase, 0.0)
        if seconds > 0:
            slices.append(Slice(phase, cursor, seconds))
            cursor += seconds
    return slices

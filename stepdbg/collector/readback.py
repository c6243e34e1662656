"""CUDA read-back: a step's values (norms, losses, GradScaler scales, gradients' largest
magnitudes) are copied to the host asynchronously and read once an event says they are
ready, usually at the next step; nothing here syncs the device but the run's end.
Records are completed in order."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from .. import device_clock, norms
from ..device_clock import DevicePhases, record_on

if TYPE_CHECKING:
    from .progress import StepInProgress


HELD_BUFFERS = 8
"""Pinned buffers kept for reuse: as many as records wait on the device at once, and some."""

MIN_BUFFER = 64
"""Elements of the smallest pinned buffer: a step's values are a few norms, a loss and scales."""


def _pinned(numel: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.empty(numel, dtype=dtype, pin_memory=True)


def _event() -> Any:
    return torch.Event("cuda", enable_timing=False)  # see `device_clock.cuda_event`


Lease = tuple[torch.Tensor, Any, "int | None"]
"""A pinned buffer, its event, and the device whose stream the event is recorded on."""


class PinnedBuffers:
    """Pinned host buffers, each with its event, reused once the values copied into them are
    read: a step queues its copy before the previous step's values are read, so a few are in
    use at once, each as large as the largest step's values. Allocated per step instead, each
    would be a call into the caching host allocator, which records an event of its own."""

    def __init__(
        self,
        allocate: Callable[[int, torch.dtype], torch.Tensor] = _pinned,
        make_event: Callable[[], Any] = _event,
    ) -> None:
        self._allocate = allocate
        self._make_event = make_event
        self._free: list[Lease] = []

    def take(self, numel: int, dtype: torch.dtype, index: int | None) -> Lease:
        """A buffer of at least ``numel`` elements of ``dtype``, with an event for device ``index``."""
        for position, (buffer, event, device) in enumerate(self._free):
            if buffer.dtype == dtype and buffer.numel() >= numel and device == index:
                del self._free[position]
                return buffer, event, device
        return self._allocate(max(numel, MIN_BUFFER), dtype), self._make_event(), index

    def give_back(self, lease: Lease) -> None:
        """Its values are read: the buffer can take another step's."""
        if len(self._free) < HELD_BUFFERS:
            self._free.append(lease)


class Resolved:
    """Values of a step waiting on the device: a pinned host copy and an event (and the
    iteration's timing events, done once their last one is). The copy is queued at once,
    or, where the values were made before a CUDA graph capture that runs now (the record of
    a backward made with no optimizer, finished at the next iteration's first call), once
    the capture is over: queued during it, it would become part of the user's graph."""

    def __init__(self, pieces: list[torch.Tensor], buffers: PinnedBuffers, phases: DevicePhases | None = None) -> None:
        self.phases = phases
        self.values: torch.Tensor | None = None
        self.event: Any = None
        self._buffers = buffers
        self._lease: Lease | None = None
        """The pinned buffer the values are copied into (and its event), until they are read."""
        self._pieces: list[torch.Tensor] | None = pieces
        if not (pieces and device_clock.capturing()):
            self._copy()

    def _copy(self) -> None:
        pieces, self._pieces = self._pieces, None
        values = self.values = norms.stack(pieces or [])
        if values is not None and values.is_cuda:
            index = values.device.index
            self._lease = buffer, self.event, _ = self._buffers.take(values.numel(), values.dtype, index)
            buffer[: values.numel()].copy_(values, non_blocking=True)
            record_on(self.event, index)  # the copy runs on the values' device

    def ready(self) -> bool:
        if self._pieces is not None:
            self._copy()  # never called while a capture runs (see `ReadBack.queue`)
        return (self.event is None or bool(self.event.query())) and (self.phases is None or self.phases.ready())

    def floats(self) -> list[float]:
        if self._pieces is not None:
            self._copy()
        if self.phases is not None:
            self.phases.end.synchronize()  # only waits when the run ends (see `ready`)
        if self.values is None:
            return []
        lease, self._lease = self._lease, None
        if lease is not None:
            self.event.synchronize()  # only reached once ready(), or when the run ends
            values = lease[0][: self.values.numel()].tolist()
            self._buffers.give_back(lease)
            return values
        return self.values.tolist()


class ReadBack:
    """The step records waiting for their values, in order."""

    def __init__(self, complete: Callable[[StepInProgress, list[float]], None]) -> None:
        self._complete = complete
        """Completes a record with its values read back."""
        self.waiting: deque[tuple[StepInProgress, Resolved]] = deque()
        self.buffers = PinnedBuffers()

    def queue(self, progress: StepInProgress, values: list[torch.Tensor]) -> None:
        """``progress`` waits for ``values`` (and its phases' events); those ready are completed."""
        self.waiting.append((progress, Resolved(values, self.buffers, progress.device_phases)))
        if not device_clock.capturing():  # no event may be queried while a capture runs
            self.flush()

    def flush(self, wait: bool = False) -> None:
        """Complete the records whose device values have arrived (all of them with ``wait``)."""
        while self.waiting and (wait or self.waiting[0][1].ready()):
            progress, resolved = self.waiting.popleft()
            self._complete(progress, resolved.floats())

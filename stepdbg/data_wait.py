"""The ``data`` phase: time the loop spends waiting for batches from a torch DataLoader.

`instrument` wraps ``_BaseDataLoaderIter.__next__`` (the single- and the
multi-process iterators inherit it, so every loop that iterates a DataLoader
is covered: Lightning, accelerate, Hugging Face's Trainer, ignite) and calls
`DataWaits.start` and `DataWaits.end` around each fetch: one clock read on each
side, nothing else on the usual path. A fetch that ends the epoch
(``StopIteration``) is no fetch; a DataLoader iterated inside another one's fetch
is part of it; a fetch on another thread than the one that installed the hooks (a
thread that prefetches batches into a queue) is none of the loop's waits: the loop
waits on the queue, in forward. The seconds add up until the next step record takes them: a wait
belongs to the step that follows it, whose batch it fetched. (On CUDA the collector
also brackets a fetch with events, so that the record's ``data`` is the time the
device sat idle for want of input, not the host's wait while it was still busy.)
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class LoaderSettings:
    """What the last DataLoader fetched from was set up with, for the input-bound hint."""

    num_workers: int
    pin_memory: bool
    persistent_workers: bool
    prefetch_factor: int | None

    @classmethod
    def of(cls, iterator: Any) -> LoaderSettings:
        workers = int(getattr(iterator, "_num_workers", 0) or 0)
        return cls(
            num_workers=workers,
            pin_memory=bool(getattr(iterator, "_pin_memory", False)),
            persistent_workers=bool(getattr(iterator, "_persistent_workers", False)),
            prefetch_factor=getattr(iterator, "_prefetch_factor", None) if workers else None,
        )

    def describe(self) -> str:
        parts = [f"num_workers={self.num_workers}", f"pin_memory={self.pin_memory}"]
        if self.num_workers:
            parts += [f"persistent_workers={self.persistent_workers}", f"prefetch_factor={self.prefetch_factor}"]
        return ", ".join(parts)


class DataWaits:
    """Seconds spent in DataLoader fetches since the previous step record."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.thread = threading.get_ident()
        """The training loop's thread: the one that made the collector (and installs the hooks)."""
        self.seconds = 0.0
        """Waited since the previous step record (`take` hands them over)."""
        self.startup = False
        """Since the previous record, a loader's first workers started: its first batch waited for them."""
        self.loader: LoaderSettings | None = None
        self._fetching = False
        self._started_loaders: set[int] = set()
        """``id`` of the index sampler of each loader whose workers have started once (a loader keeps
        its sampler for life; no reference is held)."""
        self._persistent: set[int] = set()
        """``id`` of the iterators of persistent workers seen: their next epochs start no process."""

    def start(self, iterator: Any) -> float | None:
        """A fetch begins: the time it began, or None inside another fetch (part of that one) or
        on another thread."""
        if self._fetching or threading.get_ident() != self.thread:
            return None
        self._fetching = True
        if getattr(iterator, "_num_yielded", 1) == 0:  # an epoch's first batch
            self._new_epoch(iterator)
        return self.clock()

    def end(self, started: float, fetched: bool) -> float | None:
        """The fetch begun at ``started`` returned a batch (``fetched``), or raised: when it ended,
        or None where it is no wait (StopIteration ends an epoch: no batch was waited for)."""
        now = self.clock()
        self._fetching = False
        if not fetched:
            return None
        self.seconds += now - started
        return now

    def take(self) -> tuple[float, bool]:
        """The seconds and the start-up flag of the record that ends now; both start again."""
        taken = self.seconds, self.startup
        self.seconds, self.startup = 0.0, False
        return taken

    def _new_epoch(self, iterator: Any) -> None:
        """An iterator yields its first batch: with worker processes just started (every epoch,
        unless they persist), the first ones of their loader make this a start-up wait."""
        self.loader = settings = LoaderSettings.of(iterator)
        if not settings.num_workers:
            return
        if settings.persistent_workers:
            if id(iterator) in self._persistent:
                return  # the same workers, reset for a new epoch
            self._persistent.add(id(iterator))
        loader = id(getattr(iterator, "_index_sampler", iterator))
        if loader not in self._started_loaders:
            self._started_loaders.add(loader)
            self.startup = True

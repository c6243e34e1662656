"""Memory at each step's end, read without a sync: the process's RSS, or CUDA's allocator.

A loop on the CPU: the resident set size, from ``/proc/self/statm`` read with one
``pread`` on a file kept open (2-3 µs a step; on systems without ``/proc``, none is
recorded). A loop on CUDA: the caching allocator's own counters, which the host
keeps (no device call, no sync): the bytes of live tensors, and their peak. The
allocator has a single peak, since the process started or since the script last
called ``torch.cuda.reset_peak_memory_stats``; stepdbg never resets it, since that
would change what the script's own ``max_memory_allocated`` returns. So a step's
``peak`` is the peak so far, and a step whose peak rose above the previous step's
reached that new peak itself.
"""

from __future__ import annotations

import os
from collections.abc import Callable

STATM = "/proc/self/statm"
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def cuda_allocator(index: int | None) -> dict[str, int]:
    """Bytes allocated now and their peak, from CUDA's caching allocator on device ``index``."""
    import torch

    read = getattr(torch._C, "_cuda_memoryStats", None)
    if read is not None:  # the nested dict torch.cuda.memory_stats flattens (a tenth of its cost)
        allocated = read(torch.cuda.current_device() if index is None else index)["allocated_bytes"]["all"]
        return {"allocated": int(allocated["current"]), "peak": int(allocated["peak"])}
    stats = torch.cuda.memory_stats(index)
    return {"allocated": int(stats["allocated_bytes.all.current"]), "peak": int(stats["allocated_bytes.all.peak"])}


class MemoryGauge:
    """Reads a step's memory: RSS until the loop is seen on CUDA, the allocator's after."""

    def __init__(self, cuda_stats: Callable[[int | None], dict[str, int]] = cuda_allocator) -> None:
        self._cuda_stats = cuda_stats
        self._on_cuda = False
        self._cuda_index: int | None = None
        self._statm: int | None = None
        self.failed = False

    def open(self) -> None:
        """Open ``/proc/self/statm`` (where there is one) for the run: the file is the process's
        own from now on, which a forked child must not read (it lets its session go)."""
        try:
            self._statm = os.open(STATM, os.O_RDONLY)
        except OSError:
            self._statm = None

    def close(self) -> None:
        if self._statm is not None:
            os.close(self._statm)
            self._statm = None

    def watch_cuda(self, index: int | None) -> None:
        """The loop runs on CUDA device ``index``: read its allocator from now on."""
        self._on_cuda, self._cuda_index = True, index

    def read(self) -> dict[str, int] | None:
        """This moment's memory in bytes, or None where none can be read (the gauge is closed,
        or a read failed once: it is not tried again)."""
        if self.failed:
            return None
        try:
            if self._on_cuda:
                return self._cuda_stats(self._cuda_index)
            if self._statm is None:
                return None
            return {"rss": int(os.pread(self._statm, 64, 0).split(None, 2)[1]) * PAGE_SIZE}
        except (OSError, RuntimeError, KeyError, IndexError, ValueError):
            self.failed = True
            return None


MEASURES = {"rss": "resident memory (RSS)", "allocated": "CUDA memory allocated"}
"""What a step's ``memory`` measures at its end, by the key that holds it."""


def step_memory(memory: dict[str, int] | None) -> tuple[str, int] | None:
    """The key of what a step's ``memory`` measures (see `MEASURES`), and its bytes."""
    if memory:
        for key in MEASURES:
            if key in memory:
                return key, memory[key]
    return None

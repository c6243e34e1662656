"""Memory at each step's end: RSS on the CPU, the CUDA allocator's counters (a stand-in here)."""

from __future__ import annotations

import os
import sys

import pytest
import torch
from helpers import sgd_steps
from torch import nn

from stepdbg.collector import Collector
from stepdbg.diagnostics import Diagnostics
from stepdbg.instrument import Instrumentation
from stepdbg.memory import MemoryGauge, cuda_allocator
from stepdbg.module_tree import ModuleTree
from stepdbg.rules import Thresholds
from stepdbg.schema import StepRecord
from stepdbg.style import fmt_bytes


def _loop(gauge: MemoryGauge, steps: int = 3, on_cuda: bool = False) -> list[StepRecord]:
    records: list[StepRecord] = []
    diagnostics = Diagnostics(Thresholds(), frozenset(), lambda a: None)
    collector = Collector(0, diagnostics, records.append, lambda i: None, ModuleTree(), memory=gauge)
    with Instrumentation(collector):
        if on_cuda:  # as when the loop's loss is seen on CUDA device 0
            gauge.watch_cuda(0)
        sgd_steps(nn.Linear(4, 1), [torch.ones(2, 4)] * steps)
    collector.finish()
    return records


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RSS is read from /proc")
def test_each_step_records_the_processs_resident_memory() -> None:
    gauge = MemoryGauge()
    records = _loop(gauge)
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    for step_record in records:
        assert step_record.memory is not None and set(step_record.memory) == {"rss"}
        assert abs(step_record.memory["rss"] - pages * os.sysconf("SC_PAGE_SIZE")) < 256 << 20
    assert gauge.read() is None, "the gauge is closed with the hooks"


def test_on_cuda_the_allocators_counters_are_read_never_reset() -> None:
    """A stand-in for the allocator: what it says is what each step records."""
    seen: list[int | None] = []

    def allocator(index: int | None) -> dict[str, int]:
        seen.append(index)
        return {"allocated": 1000 + len(seen), "peak": 5000}

    records = _loop(MemoryGauge(cuda_stats=allocator), on_cuda=True)
    assert [r.memory for r in records] == [{"allocated": 1001 + i, "peak": 5000} for i in range(3)]
    assert seen == [0, 0, 0]


def test_the_allocator_is_read_from_its_nested_statistics(monkeypatch: pytest.MonkeyPatch) -> None:
    """``torch.cuda.memory_stats`` flattens this dict at every call (a tenth of the time goes to
    reading it); stepdbg reads the nested one: the allocator's host-side counters, no device call."""
    stats = {"allocated_bytes": {"all": {"current": 7, "peak": 9, "allocated": 99, "freed": 92}}}
    monkeypatch.setattr(torch._C, "_cuda_memoryStats", lambda index: stats if index == 2 else {}, raising=False)
    assert cuda_allocator(2) == {"allocated": 7, "peak": 9}


def test_a_read_that_fails_is_not_tried_again() -> None:
    calls = []

    def broken(index: int | None) -> dict[str, int]:
        calls.append(index)
        raise RuntimeError("no allocator")

    gauge = MemoryGauge(cuda_stats=broken)
    gauge.watch_cuda(None)
    assert gauge.read() is None and gauge.read() is None
    assert calls == [None]


@pytest.mark.parametrize(
    ("count", "text"),
    [(None, "–"), (512, "512 B"), (3 << 20, "3 MiB"), (1536 << 20, "1.5 GiB"), (-(2 << 10), "-2 KiB")],
)
def test_bytes_read_in_binary_units(count: int | None, text: str) -> None:
    assert fmt_bytes(count) == text

"""The data phase in-process: DataLoader fetches timed on a clock the test moves by hand."""

from __future__ import annotations

import contextlib
import queue
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from helpers import Spec, sgd_steps
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from stepdbg.collector import Collector
from stepdbg.data_wait import DataWaits, LoaderSettings
from stepdbg.diagnostics import Diagnostics
from stepdbg.instrument import Instrumentation
from stepdbg.module_tree import ModuleTree
from stepdbg.rules import Thresholds
from stepdbg.schema import StepRecord


class Clock:
    """Time moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Slow(Dataset):
    """Each sample takes ``cost`` seconds of the clock to load."""

    def __init__(self, clock: Clock, size: int, cost: float = 1.0) -> None:
        self.clock, self.size, self.cost = clock, size, cost

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> torch.Tensor:
        self.clock.now += self.cost
        return torch.full((3,), float(index))


class Rows(Dataset):
    def __init__(self, data: torch.Tensor) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.data[index]


class SlowEnd(Sampler[int]):
    """Indices in order; running out takes ``cost`` seconds (an epoch's end that is no fetch)."""

    def __init__(self, clock: Clock, size: int, cost: float) -> None:
        self.clock, self.size, self.cost = clock, size, cost

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[int]:
        yield from range(self.size)
        self.clock.now += self.cost


class Model(nn.Linear):
    """A forward pass that takes ``cost`` seconds of the clock."""

    def __init__(self, clock: Clock, cost: float = 10.0) -> None:
        super().__init__(3, 1)
        self.clock, self.cost = clock, cost

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.clock.now += self.cost
        return super().forward(x)


def _collector(clock: Clock) -> tuple[Collector, list[StepRecord]]:
    records: list[StepRecord] = []
    diagnostics = Diagnostics(Thresholds(), frozenset(), lambda a: None)
    return Collector(0, diagnostics, records.append, lambda i: None, ModuleTree(), clock=clock), records


def test_a_fetch_is_the_data_phase_of_the_step_it_feeds_and_the_end_of_an_epoch_is_no_fetch() -> None:
    """Batches of 2 samples at 1 s each: 2 s of data a step, the forward's 10 s stay forward's. The
    sampler's 100 s at each epoch's end (StopIteration) are no fetch: the next step's forward."""
    clock = Clock()
    collector, records = _collector(clock)
    with Instrumentation(collector):
        loader = DataLoader(Slow(clock, 6), batch_size=2, sampler=SlowEnd(clock, 6, 100.0))
        sgd_steps(Model(clock), loader, epochs=2)
    collector.finish()
    times = [(r.time["data"], r.time["forward"], r.time["total"]) for r in records]
    assert times == [(2.0, 10.0, 12.0)] * 3 + [(2.0, 110.0, 112.0)] + [(2.0, 10.0, 12.0)] * 2
    assert collector.phases.totals["data"] == 12.0
    assert [r.calls for r in records] == [["zero_grad", "backward", "step"]] * 6
    placed = [(name, start, duration) for name, start, duration in records[3].placed_calls() if name == "data"]
    assert placed == [("data", 100.0, 2.0)], "a timeline places the wait after the epoch's end"


def test_a_wait_before_the_loops_first_call_is_its_first_steps() -> None:
    """The first fetch starts the first step's clock, as an instrumented call does; what ran
    before it (building the model) is set-up, no step's."""
    clock = Clock()
    collector, records = _collector(clock)
    with Instrumentation(collector):
        clock.now += 50.0
        sgd_steps(Model(clock), DataLoader(Slow(clock, 2, cost=3.0), batch_size=2))
    collector.finish()
    assert [(r.time["data"], r.time["total"]) for r in records] == [(6.0, 16.0)]


def test_a_loop_without_an_optimizer_and_a_loader_inside_a_fetch() -> None:
    """One record per backward; a DataLoader iterated inside another one's fetch is part of it."""
    clock = Clock()

    class Nested(Dataset):
        def __len__(self) -> int:
            return 4

        def __getitem__(self, index: int) -> torch.Tensor:
            return torch.stack(list(DataLoader(Slow(clock, 2), batch_size=1))).reshape(2, 3)[0]

    collector, records = _collector(clock)
    with Instrumentation(collector):
        model = Model(clock)
        for x in DataLoader(Nested(), batch_size=2):
            model.zero_grad()
            model(x).sum().backward()
            with torch.no_grad():
                for p in model.parameters():
                    p -= 0.1 * p.grad
    collector.finish()
    assert [(r.optimizer, r.time["data"], r.time["forward"]) for r in records] == [(None, 4.0, 10.0)] * 2


def test_a_thread_prefetching_batches_into_a_queue_waits_for_none_of_the_loops() -> None:
    """The loop waits on the queue (in forward), not in the DataLoader the thread iterates."""
    clock = Clock()
    collector, records = _collector(clock)
    with Instrumentation(collector):
        prefetched: queue.Queue[torch.Tensor] = queue.Queue()
        thread = threading.Thread(target=lambda: [prefetched.put(x) for x in DataLoader(Slow(clock, 4), batch_size=2)])
        thread.start()
        thread.join()
        sgd_steps(Model(clock), [prefetched.get(), prefetched.get()])
    collector.finish()
    assert [(r.time["data"], r.time["forward"]) for r in records] == [(0.0, 10.0), (0.0, 10.0)]


def test_a_fetch_inside_a_steps_closure_is_data_not_the_steps() -> None:
    clock = Clock()
    collector, records = _collector(clock)
    with Instrumentation(collector):
        model = Model(clock, cost=0.0)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        batches = iter(DataLoader(Slow(clock, 4, cost=5.0), batch_size=2))

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = model(next(batches)).sum()
            loss.backward()
            return loss

        optimizer.step(closure)
        optimizer.step(closure)
    collector.finish()
    assert [(r.time["data"], r.time["step"]) for r in records] == [(10.0, 0.0), (10.0, 0.0)]


def test_training_with_a_shuffled_multiprocess_loader_is_bitwise_the_same() -> None:
    """Worker processes, a shuffled sampler, dropout: the hook draws no random number and
    changes no batch."""

    def train(instrumented: bool) -> list[torch.Tensor]:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(3, 8), nn.Dropout(0.5), nn.Linear(8, 1))
        loader = DataLoader(Rows(torch.randn(32, 3)), batch_size=4, shuffle=True, num_workers=2)
        collector, records = _collector(Clock())
        with Instrumentation(collector) if instrumented else contextlib.nullcontext():
            sgd_steps(model, loader, epochs=2)
        assert len(records) == (16 if instrumented else 0)
        return [p.detach().clone() for p in model.parameters()]

    for plain, traced in zip(train(False), train(True)):
        assert torch.equal(plain, traced)


class _Iterator:
    """Stands in for a DataLoader iterator at an epoch's first batch."""

    def __init__(self, sampler: object, workers: int, persistent: bool = False) -> None:
        self._num_yielded = 0
        self._num_workers = workers
        self._persistent_workers = persistent
        self._index_sampler = sampler
        self._pin_memory = False
        self._prefetch_factor = 2


@pytest.mark.parametrize(
    ("workers", "persistent", "expected"),
    [(0, False, [False, False, False]), (2, False, [True, False, False]), (2, True, [True, False, False])],
)
def test_only_a_loaders_first_workers_starting_are_a_start_up(
    workers: int, persistent: bool, expected: list[bool]
) -> None:
    """The first epoch's workers are a start-up; later epochs' new workers (not persistent) are
    waits like any other, which persistent_workers saves; persistent ones start nothing."""
    waits = DataWaits(Clock())
    sampler = object()
    persistent_iterator = _Iterator(sampler, workers, persistent)
    flags = []
    for _ in range(3):
        iterator = persistent_iterator if persistent else _Iterator(sampler, workers)
        started = waits.start(iterator)
        assert started is not None
        waits.end(started, fetched=True)
        flags.append(waits.take()[1])
    assert flags == expected
    assert waits.loader == LoaderSettings(workers, False, persistent, 2 if workers else None)


SLOW_LOADER = Spec(str(Path(__file__).parents[1] / "examples" / "slow_dataloader.py"), ("--delay", "0.005"))
"""40 ms of waiting for each batch of 8, on steps of about a millisecond."""


@pytest.mark.uses(SLOW_LOADER)
def test_the_data_share_agrees_with_the_scripts_own_perf_counter(runs) -> None:
    """The example times its own next() calls; stepdbg's data phase is the same share of the
    loop's time (a ratio of two measures of the same waits: whatever the machine's speed),
    and so much waiting is input-bound."""
    run = runs.get(SLOW_LOADER)
    assert run.proc.returncode == 0, run.describe()
    said = re.search(r"waiting for batches: ([0-9.]+)% of the loop", run.proc.stdout)
    assert said is not None, run.describe()
    own = float(said[1]) / 100
    records = run.steps()
    share = sum(r["time"]["data"] for r in records) / sum(r["time"]["total"] for r in records)
    assert abs(share - own) <= 0.05, (share, own)
    assert [(a["rule"], a["step"]) for a in run.anomalies] == [("input-bound", 50)], run.describe()
    assert "num_workers=0" in run.anomalies[0]["message"]

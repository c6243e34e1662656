"""Instrumentation in-process: what a loop's hooks record, on both backward entry points."""

from __future__ import annotations

import itertools
import math
import sys
from collections.abc import Callable
from typing import ClassVar

import pytest
import torch
import torch.autograd.graph
from torch import nn

import stepdbg.collector.losses
import stepdbg.collector.phases
from stepdbg import device_clock, norms
from stepdbg.collector import Collector
from stepdbg.diagnostics import Diagnostics
from stepdbg.instrument import Instrumentation, collecting
from stepdbg.module_tree import ModuleTree
from stepdbg.rules import Thresholds
from stepdbg.schema import Anomaly, OptimizerInfo, StepRecord


def _zero_grad(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    optimizer.zero_grad()


def traced_loop(
    steps: int = 3, clear: Callable[[nn.Module, torch.optim.Optimizer], None] = _zero_grad
) -> tuple[list[StepRecord], list[OptimizerInfo], list[Anomaly], list[float]]:
    """A small SGD loop under stepdbg's hooks, clearing its gradients with ``clear``: its
    records, and the losses the loop itself saw."""
    records: list[StepRecord] = []
    infos: list[OptimizerInfo] = []
    found: list[Anomaly] = []
    tree = ModuleTree()
    collector = Collector(1, Diagnostics(Thresholds(), frozenset(), found.append), records.append, infos.append, tree)
    losses = []
    tree.install()
    try:
        with Instrumentation(collector):
            torch.manual_seed(0)
            model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
            optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
            x, y = torch.randn(8, 3), torch.randn(8, 1)
            for _ in range(steps):
                clear(model, optimizer)
                loss = nn.functional.mse_loss(model(x), y)
                torch.autograd.backward([loss])  # a list, as the public call allows
                optimizer.step()
                losses.append(loss.item())
    finally:
        tree.uninstall()
    collector.finish()
    return records, infos, found, losses


def test_collecting_tells_the_collectors_code_from_the_scripts() -> None:
    """What a signal handler asks before it ends a session where the main thread happens to be."""
    seen: list[bool] = []
    collector = Collector(
        0,
        Diagnostics(Thresholds(), frozenset(), lambda a: None),
        lambda r: seen.append(collecting(sys._getframe())),
        lambda i: None,
        ModuleTree(),
    )
    instrumentation = Instrumentation(collector)
    with instrumentation:
        model = nn.Linear(2, 1)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        optimizer.zero_grad()
        model(torch.ones(1, 2)).sum().backward()
        optimizer.step()
        seen.append(collecting(sys._getframe()))
    instrumentation.finish()
    assert seen == [True, False]


@pytest.mark.parametrize("entry", ["engine", "public-backward"])
def test_every_call_is_recorded_once(monkeypatch: pytest.MonkeyPatch, entry: str) -> None:
    if entry == "public-backward":  # a torch without the private engine entry: the fallback wraps autograd.backward
        monkeypatch.setattr(torch.autograd.graph, "_engine_run_backward", None)
    records, infos, found, losses = traced_loop()
    assert [i.cls for i in infos] == ["SGD"]
    assert infos[0].groups[0].params == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert [r.step for r in records] == [0, 1, 2]
    assert [r.calls for r in records] == [["zero_grad", "backward", "step"]] * 3
    assert [r.backward_calls for r in records] == [1, 1, 1]
    assert [r.loss for r in records] == pytest.approx(losses, rel=1e-6)
    assert all(r.grad_norm is not None and r.grad_norm > 0 for r in records)
    assert found == []


def _collecting(
    every: int = 0, make_event: Callable[[], object] | None = None
) -> tuple[Collector, ModuleTree, list[StepRecord]]:
    """A collector (``make_event``: stand-in CUDA events), its module tree and its records."""
    records: list[StepRecord] = []
    tree = ModuleTree()
    diagnostics = Diagnostics(Thresholds(), frozenset(), lambda a: None)
    collector = Collector(every, diagnostics, records.append, lambda i: None, tree, make_event=make_event)
    return collector, tree, records


def _judging() -> tuple[Collector, list[StepRecord], list[Anomaly]]:
    """A collector, its records and the anomalies its rules find."""
    found: list[Anomaly] = []
    records: list[StepRecord] = []
    collector = Collector(
        0, Diagnostics(Thresholds(), frozenset(), found.append), records.append, lambda i: None, ModuleTree()
    )
    return collector, records, found


def _traced_linear_loop(
    before_zero_grad: Callable[[int, nn.Linear, torch.optim.Optimizer], None] = lambda *a: None,
    after_backward: Callable[[int, nn.Linear], None] = lambda *a: None,
) -> tuple[list[StepRecord], list[float]]:
    """Three SGD steps on a Linear layer, changed by the callbacks: the records, and each
    step's global gradient norm as the loop itself measures it (float64, sparse or dense)."""
    collector, _, records = _collecting()
    expected = []
    with Instrumentation(collector):
        model = nn.Linear(3, 3)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        x = torch.randn(4, 3)
        for step in range(3):
            before_zero_grad(step, model, optimizer)
            optimizer.zero_grad()
            model(x).square().sum().backward()
            after_backward(step, model)
            grads = [p.grad.to_dense().double() for p in optimizer.param_groups[0]["params"] if p.grad is not None]
            expected.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))
            optimizer.step()
    collector.finish()
    return records, expected


def test_a_parameter_swapped_into_a_group_is_read_at_the_next_step() -> None:
    """The cached layout is checked against the groups' parameters, not only the lists holding them."""

    def swap_bias(step: int, model: nn.Linear, optimizer: torch.optim.Optimizer) -> None:
        if step == 2:  # in place: same list, same length
            model.bias = optimizer.param_groups[0]["params"][1] = nn.Parameter(torch.randn(3) * 100)

    records, expected = _traced_linear_loop(before_zero_grad=swap_bias)
    assert [r.grad_norm for r in records] == pytest.approx(expected, rel=1e-5)


def test_an_optimizer_whose_parameters_were_all_replaced_is_the_same_optimizer() -> None:
    """A head re-initialized and its optimizer's group given the new parameters: still optimizer 0."""

    def replace_all(step: int, model: nn.Linear, optimizer: torch.optim.Optimizer) -> None:
        if step == 2:
            model.weight = nn.Parameter(torch.randn(3, 3))
            model.bias = nn.Parameter(torch.randn(3))
            optimizer.param_groups[0]["params"] = list(model.parameters())

    records, expected = _traced_linear_loop(before_zero_grad=replace_all)
    assert [(r.optimizer, r.step) for r in records] == [(0, 0), (0, 1), (0, 2)]
    assert [r.grad_norm for r in records] == pytest.approx(expected, rel=1e-5)


def test_group_norms_follow_the_parameters_that_have_gradients_step_by_step() -> None:
    """The way a step's norms are taken is kept for the parameters that had gradients: a
    layer frozen for some steps, another left out of the loss, each group still exact."""
    collector, _, records = _collecting()
    expected: list[list[float | None]] = []
    frozen = {2: 1, 3: 1, 5: 0}  # step -> the layer without gradients
    with Instrumentation(collector):
        torch.manual_seed(0)
        layers = nn.ModuleList(nn.Linear(4, 4) for _ in range(3))
        groups = [{"params": [layers[0].weight, layers[1].weight, layers[2].weight]}]
        groups += [{"params": [layer.bias]} for layer in layers]
        optimizer = torch.optim.SGD(groups, lr=0.01)
        x = torch.randn(5, 4)
        for step in range(7):
            for index, layer in enumerate(layers):
                layer.requires_grad_(frozen.get(step) != index)
            optimizer.zero_grad()
            h = x
            for layer in layers:
                h = layer(h).tanh()
            h.square().sum().backward()
            expected.append(
                [
                    math.sqrt(sum(float(p.grad.double().square().sum()) for p in group["params"] if p.grad is not None))
                    if any(p.grad is not None for p in group["params"])
                    else None
                    for group in optimizer.param_groups
                ]
            )
            optimizer.step()
    collector.finish()
    assert [r.group_grad_norms for r in records] == [
        [pytest.approx(n, rel=1e-5) if n is not None else None for n in step] for step in expected
    ]


def test_gradients_that_no_longer_flatten_fall_back_to_separate_norms() -> None:
    """A step whose gradients cannot share one flat buffer any more (here a sparse one) is still measured."""

    def sparse_bias_grad(step: int, model: nn.Linear) -> None:
        if step == 2:
            model.bias.grad = model.bias.grad.to_sparse()

    records, expected = _traced_linear_loop(after_backward=sparse_bias_grad)
    assert [r.grad_norm for r in records] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("read", ["now", "with the step"])
@pytest.mark.parametrize("cleared", ["all", "all but the head"])
def test_gradients_zeroed_through_data_are_cleared(monkeypatch: pytest.MonkeyPatch, read: str, cleared: str) -> None:
    """``p.grad.data.zero_()`` moves no version: the values tell such a clear from gradients
    left to accumulate into. On the CPU they are read as the backward begins; on CUDA (stood
    in for by 0-d norms) they are read back with the step's values, which then decide: the
    same verdict at the same step, naming the same parameter."""
    if read == "with the step":
        monkeypatch.setattr(norms, "values_held", norms.per_tensor_norms)

    def clear_through_data(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        for p in (model if cleared == "all" else model[0]).parameters():
            if p.grad is not None:
                p.grad.data.zero_()

    records, _, found, _ = traced_loop(clear=clear_through_data)
    expected = [] if cleared == "all" else [("missing-zero-grad", 1, "2.weight")]
    assert [(a.rule, a.step, a.param) for a in found] == expected
    assert [r.backward_calls for r in records] == [1, 1, 1]


def test_a_finished_optimizer_and_its_model_are_not_kept_alive() -> None:
    import gc
    import weakref

    collector, tree, _ = _collecting(every=1)  # detail steps too: they cache the model's root
    tree.install()
    try:
        with Instrumentation(collector):
            model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 1))
            optimizer = torch.optim.Adam(model.parameters())
            for _ in range(2):
                optimizer.zero_grad()
                model(torch.randn(4, 3)).sum().backward()
                optimizer.step()
            weight = weakref.ref(model[0].weight)
            del model, optimizer
            gc.collect()
            assert weight() is None, "stepdbg keeps a parameter of a deleted model alive"
    finally:
        tree.uninstall()


def test_an_idle_optimizer_does_not_keep_every_loss_for_its_first_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """An optimizer built at the start for a later phase, whose head the loss reaches all along:
    the losses of the steps meanwhile are not all kept for it (they were: memory and time grew
    with every step); one whose parameters the loss never reached takes only its own."""
    monkeypatch.setattr(stepdbg.collector.losses, "HELD_LOSSES", 128)
    monkeypatch.setattr(stepdbg.collector.phases, "HELD_CALLS", 64)
    collector, _, records = _collecting()
    held = []
    with Instrumentation(collector):
        torch.manual_seed(0)
        model, head, idle = nn.Linear(3, 1), nn.Linear(3, 1), nn.Linear(3, 1)
        later = torch.optim.SGD(head.parameters(), lr=0.1)
        unreached = torch.optim.SGD(idle.parameters(), lr=0.1)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        x = torch.randn(4, 3)
        for _ in range(500):
            optimizer.zero_grad()
            (model(x).sum() + head(x).sum()).backward()
            optimizer.step()
            held.append(len(collector.losses.held))
        idle_runs = len(
            collector.optimizers.tracks[1].state.missed
        )  # 500 backward passes that did not reach it: one run
        own = idle(x).sum()
        own.backward()
        unreached.step()
        head(x).sum().backward()
        later.step()  # never cleared: its first step consumes every backward since the start
        later.zero_grad()
        loss = head(x).sum()
        loss.backward()
        later.step()
    collector.finish()
    assert max(held) <= 128
    assert [(r.optimizer, r.step, r.backward_calls) for r in records[-3:]] == [(1, 0, 1), (0, 0, 501), (0, 1, 1)]
    assert records[-3].loss == pytest.approx(own.item())  # only the backward that reached it
    assert idle_runs == 1
    assert records[-2].loss is None  # most of its losses were dropped: unknown, not a partial sum
    assert records[-1].loss == pytest.approx(loss.item())


def test_a_loop_that_never_steps_its_optimizer_holds_a_bounded_number_of_losses_and_calls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Updates made by hand beside an optimizer that is built but never stepped: no step
    record takes the losses and calls, so each backward must prune them."""

    monkeypatch.setattr(stepdbg.collector.losses, "HELD_LOSSES", 128)
    monkeypatch.setattr(stepdbg.collector.phases, "HELD_CALLS", 64)
    collector, _, records = _collecting()
    held = []
    with Instrumentation(collector):
        weight = torch.randn(3, 1, requires_grad=True)
        unused = torch.optim.SGD([weight], lr=0.1)  # built and kept by a framework, never stepped
        x = torch.randn(4, 3)
        for _ in range(500):
            (x @ weight).sum().backward()
            with torch.no_grad():
                weight -= 0.1 * weight.grad
            weight.grad = None
            held.append(len(collector.losses.held))
        del unused
        optimizer = torch.optim.SGD([weight], lr=0.1)  # then a phase that steps one
        (x @ weight).sum().backward()
        optimizer.step()
    assert max(held) <= 128
    assert len(records) == 1 and records[0].calls[0] == "…" and records[0].calls[-1] == "step"
    assert int(records[0].calls[1].split("×")[1]) <= 64


def test_optimizers_built_each_iteration_are_forgotten_with_them() -> None:
    """A new optimizer per iteration (per task, per episode): each one's state goes with it,
    or every backward would walk all the optimizers ever built."""
    collector, _, records = _collecting()
    tracked = []
    with Instrumentation(collector):
        model = nn.Linear(3, 1)
        x = torch.randn(4, 3)
        for _ in range(50):
            optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
            optimizer.zero_grad()
            model(x).sum().backward()
            optimizer.step()
            tracked.append(len(collector.optimizers.tracks))
    collector.finish()
    assert max(tracked) <= 2
    assert [(r.optimizer, r.step, r.backward_calls) for r in records] == [(i, 0, 1) for i in range(50)]


class _DeviceEvent:
    """Stands in for a CUDA timing event: each one recorded is one second of device time
    after the previous, whatever the host's clock says; the device reaches them in order."""

    timeline: ClassVar[list[_DeviceEvent]] = []

    def __init__(self) -> None:
        self.at = len(_DeviceEvent.timeline)
        self.done = True
        _DeviceEvent.timeline.append(self)

    def query(self) -> bool:
        return self.done

    def synchronize(self) -> None:
        for event in _DeviceEvent.timeline[: self.at + 1]:
            event.done = True

    def elapsed_time(self, end: _DeviceEvent) -> float:
        if not (self.done and end.done):
            raise RuntimeError("event not ready")
        return 1000.0 * (end.at - self.at)


def _device_timed_loop(
    iterations: int, make_event: Callable[[int], _DeviceEvent | None]
) -> tuple[Collector, list[StepRecord], list[int]]:
    """An SGD loop timed with stand-in events (``make_event(iteration)``): the collector, its
    records, and how many records there were after each iteration."""
    collector, _, records = _collecting(make_event=lambda: make_event(iteration))
    emitted = []
    with Instrumentation(collector):
        model = nn.Linear(3, 1)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        for iteration in range(iterations):  # noqa: B007 (make_event's lambda reads it)
            optimizer.zero_grad()
            model(torch.ones(2, 3)).sum().backward()
            optimizer.step()
            emitted.append(len(records))
    return collector, records, emitted


def test_on_a_device_phase_times_come_from_its_events_once_they_are_done() -> None:
    """zero_grad, backward, step: 6 events an iteration (the step's end ends the iteration too),
    one second apart on the stand-in device. The first iteration has no event to start from and
    keeps the host's times; a record waits for its last event, and the totals follow the device's
    times."""

    def make_event(iteration: int) -> _DeviceEvent:
        event = _DeviceEvent()
        event.done = iteration < 3  # the device has not reached the last iteration's events yet
        return event

    collector, records, emitted = _device_timed_loop(4, make_event)
    assert emitted == [1, 2, 3, 3], "the last record waits for its events"
    collector.finish()
    first, *later = [r.time for r in records]
    assert first["total"] < 1.0, "the first iteration is timed by the host"
    for time in later:
        assert (time["zero_grad"], time["backward"], time["step"], time["total"]) == (1.0, 1.0, 1.0, 6.0)
        assert time["forward"] == pytest.approx(3.0 - time["overhead"])
    assert collector.phases.totals["backward"] == pytest.approx(3.0 + first["backward"])


def test_on_a_device_the_data_phase_is_the_time_between_a_fetchs_events() -> None:
    """A fetch is bracketed by events too: the device's data time is how long it went without
    work for want of a batch (here, one second of the stand-in device's)."""
    collector, _, records = _collecting(make_event=_DeviceEvent)
    with Instrumentation(collector):
        model = nn.Linear(3, 1)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        for x in torch.utils.data.DataLoader(torch.ones(6, 3), batch_size=2):
            optimizer.zero_grad()
            model(x).sum().backward()
            optimizer.step()
    collector.finish()
    for time in [r.time for r in records][1:]:
        phases = (time["data"], time["zero_grad"], time["backward"], time["step"], time["total"])
        assert phases == (1.0, 1.0, 1.0, 1.0, 8.0)  # the step's end ends the iteration too
        assert time["forward"] == pytest.approx(4.0 - time["overhead"])


def test_an_iteration_that_cannot_record_an_event_keeps_the_hosts_times() -> None:
    """While the stream is captured into a CUDA graph no event can be recorded: that
    iteration is timed by the host, the next ones by the device again."""
    collector, records, _ = _device_timed_loop(5, lambda iteration: None if iteration == 2 else _DeviceEvent())
    collector.finish()
    device_timed = [r.time["total"] >= 1.0 for r in records]
    assert device_timed == [False, True, False, False, True]  # 3 starts from no event: iteration 2 recorded none


class _CapturedEvent(_DeviceEvent):
    """A stand-in event that notes each query made while a capture runs (CUDA forbids them)."""

    capturing = False
    queried_while_capturing = 0

    def __init__(self) -> None:
        super().__init__()
        self.done = False  # the device lags: each record waits until the run's end

    def query(self) -> bool:
        if _CapturedEvent.capturing:
            _CapturedEvent.queried_while_capturing += 1
        return super().query()


@pytest.mark.parametrize("loop", ["optimizer", "no optimizer"])
def test_an_iteration_captured_into_a_cuda_graph_reads_and_queries_nothing(
    loop: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While ``torch.cuda.graph`` captures, nothing has run: stepdbg queues no norm (it would
    become part of the user's graph), reads no loss, and queries no event (CUDA forbids it
    during a capture, and the user's capture would fail); the replays run no hook at all."""
    monkeypatch.setattr(device_clock, "capturing", lambda: _CapturedEvent.capturing)
    monkeypatch.setattr(_CapturedEvent, "queried_while_capturing", 0)
    collector, _, records = _collecting(
        every=1, make_event=lambda: None if _CapturedEvent.capturing else _CapturedEvent()
    )
    with Instrumentation(collector):
        model = nn.Linear(3, 1)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1) if loop == "optimizer" else None
        for iteration in range(4):
            _CapturedEvent.capturing = iteration == 2
            try:
                model.zero_grad()
                model(torch.ones(2, 3)).sum().backward()
                if optimizer is not None:
                    optimizer.step()
            finally:
                _CapturedEvent.capturing = False
    collector.finish()
    assert _CapturedEvent.queried_while_capturing == 0
    assert [r.backward_calls for r in records] == [1, 1, 1, 1]
    assert [r.loss is None for r in records] == [False, False, True, False]
    assert [r.grad_norm is None for r in records] == [False, False, True, False]
    if optimizer is not None:
        assert [r.group_grad_norms == [None] for r in records] == [False, False, True, False]


def test_an_internal_error_stops_tracing_once_and_the_loop_goes_on(capsys: pytest.CaptureFixture[str]) -> None:
    """A failure inside stepdbg is one line on stderr; the hooks go quiet and training is untouched."""

    def train() -> list[torch.Tensor]:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        x, y = torch.randn(8, 3), torch.randn(8, 1)
        for _ in range(3):
            optimizer.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            optimizer.step()
        return [p.detach().clone() for p in model.parameters()]

    records: list[StepRecord] = []
    collector = Collector(
        1, Diagnostics(Thresholds(), frozenset(), lambda a: None), records.append, lambda i: None, ModuleTree()
    )
    calls = itertools.count()
    original = collector.on_backward_end

    def failing(accumulate: bool) -> None:
        if next(calls) == 1:
            raise RuntimeError("boom")
        original(accumulate)

    collector.on_backward_end = failing  # type: ignore[method-assign]
    instrumentation = Instrumentation(collector)
    with instrumentation:
        traced = train()
    collector.finish()
    assert all(torch.equal(a, b) for a, b in zip(traced, train()))
    assert instrumentation.failed == "RuntimeError: boom"
    assert capsys.readouterr().err == "stepdbg: internal error, tracing stopped: RuntimeError: boom\n"
    assert [r.step for r in records] == [0]


def test_an_internal_error_while_the_run_ends_is_one_line_not_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    """Records still waiting on the device are read as the run ends: a failure there (a
    CUDA error) is reported like any other, and once tracing has stopped nothing is read."""
    collector, _, _ = _collecting()
    instrumentation = Instrumentation(collector)

    def failing() -> None:
        raise RuntimeError("CUDA error: invalid argument")

    collector.finish = failing  # type: ignore[method-assign]
    instrumentation.finish()
    instrumentation.finish()
    assert (
        capsys.readouterr().err
        == "stepdbg: internal error, tracing stopped: RuntimeError: CUDA error: invalid argument\n"
    )


def test_a_sequential_scheduler_is_seen_at_its_milestones_and_named() -> None:
    """SequentialLR steps no child's count at a milestone (it sets the next child's lr itself):
    that step is seen all the same, and a misplaced one is put down to SequentialLR."""
    collector, records, found = _judging()
    with Instrumentation(collector):
        model = nn.Linear(3, 1)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        warmup = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.5, total_iters=1)
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=3)
        scheduler = torch.optim.lr_scheduler.SequentialLR(optimizer, [warmup, cosine], milestones=[1])
        for step in range(4):
            optimizer.zero_grad()
            model(torch.ones(2, 3)).sum().backward()
            if step == 3:
                scheduler.step()  # above the step, once
            optimizer.step()
            if step < 3:
                scheduler.step()
    collector.finish()
    assert [r.calls for r in records[1:3]] == [["scheduler", "zero_grad", "backward", "step"]] * 2
    assert records[3].calls == ["scheduler", "zero_grad", "backward", "scheduler", "step"]
    assert [(a.rule, a.step) for a in found] == [("scheduler-before-step", 3)]
    assert found[0].message.startswith("SequentialLR.step() ran before")


@pytest.mark.parametrize("where", ["after", "before"])
def test_a_scheduler_that_keeps_no_step_count_is_seen(where: str) -> None:
    """CosineAnnealingWarmRestarts.step() never moves ``_step_count``: its steps are seen from
    the new last lrs it sets, in the calls and, misplaced, as scheduler-before-step."""
    collector, records, found = _judging()
    with Instrumentation(collector):
        model = nn.Linear(3, 1)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=2)
        for _ in range(3):
            optimizer.zero_grad()
            model(torch.ones(2, 3)).sum().backward()
            if where == "before":
                scheduler.step()
            optimizer.step()
            if where == "after":
                scheduler.step()
    collector.finish()
    if where == "after":
        assert [r.calls for r in records[1:]] == [["scheduler", "zero_grad", "backward", "step"]] * 2
        assert found == []
    else:
        assert [r.calls for r in records] == [["zero_grad", "backward", "scheduler", "step"]] * 3
        assert [(a.rule, a.step) for a in found] == [("scheduler-before-step", 0)]


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before:UserWarning")
def test_a_resumed_scheduler_fast_forwarded_or_stepped_twice_makes_as_many_calls() -> None:
    """A new scheduler fast-forwarded after the optimizer's state was loaded (a resume) is no
    misplaced scheduler; steps made several at a time are as many calls."""
    collector, records, found = _judging()
    with Instrumentation(collector):
        model = nn.Linear(3, 1)
        trained = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        model(torch.ones(2, 3)).sum().backward()
        trained.step()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        optimizer.load_state_dict(trained.state_dict())
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
        for _ in range(3):
            scheduler.step()  # fast-forward past the epochs done
        for _ in range(2):
            optimizer.zero_grad()
            model(torch.ones(2, 3)).sum().backward()
            optimizer.step()
            scheduler.step()
            scheduler.step()
    collector.finish()
    assert found == []
    assert [r.calls for r in records[1:]] == [
        ["scheduler×3", "zero_grad", "backward", "step"],
        ["scheduler×2", "zero_grad", "backward", "step"],
    ]


def test_each_call_is_placed_in_its_iteration_in_the_order_it_ran() -> None:
    """``spans``: where a timeline draws each call; they lie within the record's time, one after another."""
    records, _, _, _ = traced_loop()
    for record in records:
        placed = list(record.placed_calls())
        names = [name for name, _, _ in placed]
        assert names[-4:] == ["zero_grad", "backward", "overhead", "step"]  # the norms are taken as the step starts
        assert names[:-4] == ([] if record.step == 0 else ["overhead"])  # finishing the previous record
        ends = [0.0]
        for _, start, duration in placed:
            assert start >= ends[-1] - 1e-6 and duration >= 0
            ends.append(start + duration)
        assert ends[-1] <= record.time["total"] + 1e-6
        assert sum(d for name, _, d in placed if name == "backward") == pytest.approx(record.time["backward"], abs=2e-6)


def test_calls_made_inside_a_step_lie_within_it() -> None:
    """LBFGS runs its closure (zero_grad, backward) inside ``step``: those spans nest inside the step's."""
    collector, _, records = _collecting()
    with Instrumentation(collector):
        torch.manual_seed(0)
        model = nn.Linear(3, 1)
        optimizer = torch.optim.LBFGS(model.parameters(), max_iter=3)
        x, y = torch.randn(8, 3), torch.randn(8, 1)

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = nn.functional.mse_loss(model(x), y)
            loss.backward()
            return loss

        for _ in range(2):
            optimizer.step(closure)
    collector.finish()
    for record in records:
        placed = list(record.placed_calls())
        step = next((start, start + duration) for name, start, duration in placed if name == "step")
        inner = [(start, start + duration) for name, start, duration in placed if name in ("zero_grad", "backward")]
        assert len(inner) >= 2
        assert all(step[0] - 1e-6 <= start and end <= step[1] + 1e-6 for start, end in inner)

"""Diagnostics in-process: what the nonfinite rule names and how often it looks; what vanishing-grad calls vanishing."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest

from stepdbg.diagnostics import Diagnostics
from stepdbg.facts import AccumulatedOnConsumed, ConsumedAgain, StepFinished
from stepdbg.rules import Thresholds
from stepdbg.schema import Anomaly, AnomalySteps, EndRecord, StepRecord
from stepdbg.spawned_ranks import SpawnedRanks


def record(optimizer: int, step: int, loss: float, grad_norm: float | None = 1.0) -> StepRecord:
    return StepRecord(
        optimizer=optimizer,
        step=step,
        t=0.0,
        calls=["zero_grad", "backward", "step"],
        backward_calls=1,
        skipped=False,
        loss=loss,
        grad_norm=grad_norm,
        group_grad_norms=[grad_norm],
        lr=[0.1],
        time={},
    )


def finished(
    record: StepRecord,
    names: list[str],
    param_norms: list[float | None] | None = None,
    culprit: Callable[[], str | None] = lambda: None,
    data_startup: bool = False,
) -> StepFinished:
    """A finished step whose trainable parameters all had a gradient, after a backward."""
    return StepFinished(record, names, param_norms, [], culprit, True, data_startup)


def test_nonfinite_names_a_culprit_once_per_optimizer() -> None:
    found: list[Anomaly] = []
    diagnostics = Diagnostics(Thresholds(), frozenset(), found.append)
    asked: list[int] = []

    def culprit_of(optimizer: int) -> str:
        asked.append(optimizer)
        return f"net{optimizer}.weight"

    for step in range(3):
        for optimizer in (0, 1):
            culprit = lambda o=optimizer: culprit_of(o)  # noqa: E731
            diagnostics.check_step(finished(record(optimizer, step, math.nan, math.nan), ["w"], None, culprit))
    assert [(a.rule, a.optimizer, a.step, a.param) for a in found] == [
        ("nonfinite", 0, 0, "net0.weight"),
        ("nonfinite", 1, 0, "net1.weight"),
    ]
    assert asked == [0, 1], "the culprit is searched only for each optimizer's first report"
    assert diagnostics.counts == {"nonfinite": 6}


def test_disabled_nonfinite_never_searches() -> None:
    def never() -> str:
        raise AssertionError("searched for the culprit of a disabled rule")

    diagnostics = Diagnostics(Thresholds(), frozenset({"nonfinite"}), lambda anomaly: None)
    diagnostics.check_step(finished(record(0, 0, math.inf, math.inf), ["w"], None, never))
    assert diagnostics.counts == {}


def test_a_nonfinite_loss_with_finite_gradients_is_information() -> None:
    """A mean over an empty batch: NaN loss, zero gradients, no harm done; nor where the loss
    reached none of the step's parameters. A NaN gradient later is still the error."""
    found: list[Anomaly] = []
    diagnostics = Diagnostics(Thresholds(), frozenset(), found.append)
    diagnostics.check_step(finished(record(0, 0, math.nan, 0.0), ["w"]))
    diagnostics.check_step(finished(record(0, 1, math.nan, 0.0), ["w"]))
    diagnostics.check_step(finished(record(0, 2, 1.0, math.nan), ["w"], None, lambda: "w"))
    diagnostics.check_step(finished(record(1, 0, math.nan, None), ["v"]))
    assert [(a.rule, a.severity, a.optimizer, a.step, a.param) for a in found] == [
        ("nonfinite-loss", "info", 0, 0, None),
        ("nonfinite", "error", 0, 2, "w"),
        ("nonfinite-loss", "info", 1, 0, None),
    ]
    assert found[0].message == "loss is nan at step 0, but the gradients the step used are finite"
    assert found[2].message == "loss is nan at step 0, but no gradient reached the step"
    assert diagnostics.counts == {"nonfinite-loss": 3, "nonfinite": 1}


NAMES = ["stem.weight", "stem.bias", "branch.weight", "branch.bias", "head.weight", "head.bias"]


def vanishing_reports(
    grads: list[float], updates: list[float | None] | None, steps: int = 3
) -> list[tuple[int, str | None]]:
    """The vanishing-grad reports over ``steps`` detail steps with these per-parameter numbers."""
    found: list[Anomaly] = []
    diagnostics = Diagnostics(Thresholds(), frozenset(), found.append)
    for step in range(steps):
        detail = record(0, step, 1.0)
        detail.param_grad_norms = dict(zip(NAMES, grads))
        if updates is not None:
            detail.param_update_ratios = dict(zip(NAMES, updates))
        diagnostics.check_step(finished(detail, NAMES, list(grads)))
    return [(a.step, a.param) for a in found if a.rule == "vanishing-grad"]


NORMAL = [1.0, 0.5]
TINY = [1e-9, 1e-9]


@pytest.mark.parametrize(
    ("branch_grads", "branch_updates", "expected"),
    [
        pytest.param(TINY, [1e-12, 1e-12], [(2, "branch.weight")], id="starved-layer"),
        pytest.param(TINY, None, [(2, "branch.weight")], id="starved-no-update-measured"),
        pytest.param(TINY, [1e-3, 1e-3], [], id="scaled-branch-that-moves"),  # ReZero, LayerScale under Adam
        pytest.param([1.0, 1e-9], [1e-3, 1e-12], [], id="bias-before-batchnorm"),
    ],
)
def test_vanishing_is_a_layer_that_neither_gets_gradient_nor_moves(
    branch_grads: list[float], branch_updates: list[float] | None, expected: list[tuple[int, str]]
) -> None:
    grads = NORMAL + branch_grads + NORMAL
    updates = None if branch_updates is None else [1e-3, 1e-3, *branch_updates, 1e-3, 1e-3]
    assert vanishing_reports(grads, updates) == expected
    assert vanishing_reports(grads, updates, steps=2) == [], "3 detail steps in a row"


def stretches_of(losses: list[float], t_step: float = 0.01) -> tuple[list[tuple[int, int, int]], dict[str, int]]:
    """(first step, last step, count) of each nonfinite stretch written over steps with these losses."""
    written: list[AnomalySteps] = []
    diagnostics = Diagnostics(Thresholds(), frozenset(), lambda anomaly: None, written.append)
    for step, loss in enumerate(losses):
        bad = record(0, step, loss, loss)
        bad.t = step * t_step
        diagnostics.check_step(finished(bad, ["w"], None, lambda: "w"))
    diagnostics.close()
    assert {a.rule for a in written} <= {"nonfinite"} and {a.optimizer for a in written} <= {0}
    return [(a.first_step, a.last_step, a.count) for a in written], diagnostics.counts


def test_where_a_rule_repeats_is_written_as_stretches_of_steps() -> None:
    """One record for a rule firing at every step, not one per repeat; a pause ends a stretch."""
    nan = math.nan
    assert stretches_of([1.0] + [nan] * 59) == ([(1, 59, 59)], {"nonfinite": 59})
    assert stretches_of([nan, nan, nan, 1.0, 1.0, nan, nan]) == ([(0, 2, 3), (5, 6, 2)], {"nonfinite": 5})
    assert stretches_of([1.0, 1.0]) == ([], {})


def test_a_long_stretch_is_written_every_second_so_that_a_killed_run_keeps_it() -> None:
    found, counts = stretches_of([math.nan] * 10, t_step=0.4)  # a new stretch from the step 1 s or more after its start
    assert found == [(0, 2, 3), (3, 5, 3), (6, 8, 3), (9, 9, 1)] and counts == {"nonfinite": 10}


def test_stretches_are_kept_per_rule_and_optimizer() -> None:
    written: list[AnomalySteps] = []
    diagnostics = Diagnostics(Thresholds(), frozenset({"step-without-backward"}), lambda anomaly: None, written.append)
    for step in range(3):
        for optimizer in (0, 1):
            assert diagnostics.judge(AccumulatedOnConsumed(optimizer, step, None), 0.0)
            assert not diagnostics.judge(ConsumedAgain(optimizer, step), 0.0), "disabled: neither counted nor written"
            diagnostics.check_step(finished(record(optimizer, step, 1.0), ["w"]))
    diagnostics.judge(AccumulatedOnConsumed(0, 3, None), 0.0)
    diagnostics.check_step(finished(record(0, 3, 1.0), ["w"]))
    diagnostics.check_step(finished(record(1, 3, 1.0), ["w"]))  # optimizer 1's stretch is over
    assert [(a.optimizer, a.first_step, a.last_step, a.count) for a in written] == [(1, 0, 2, 3)]
    diagnostics.close()
    assert [(a.optimizer, a.first_step, a.last_step, a.count) for a in written][1:] == [(0, 0, 3, 4)]
    assert diagnostics.counts == {"missing-zero-grad": 7}


# ---- the run's steps together: input-bound and memory-growth -------------------------------

MiB = 1 << 20


def timed(step: int, data: float, total: float = 1.0, memory: dict[str, int] | None = None) -> StepRecord:
    """A step of ``total`` seconds, ``data`` of them waiting for batches."""
    step_record = record(0, step, 1.0)
    step_record.time = {"data": data, "forward": total - data, "total": total}
    step_record.memory = memory
    return step_record


def judged(
    records: list[StepRecord], startups: frozenset[int] = frozenset(), disabled: frozenset[str] = frozenset()
) -> tuple[Diagnostics, list[Anomaly]]:
    found: list[Anomaly] = []
    diagnostics = Diagnostics(Thresholds(), disabled, found.append)
    for step_record in records:
        diagnostics.check_step(finished(step_record, ["w"], data_startup=step_record.step in startups))
    return diagnostics, found


@pytest.mark.parametrize(
    ("share", "expected"), [(0.2, []), (0.29, []), (0.45, [("info", 50)]), (0.75, [("warning", 50)])]
)
def test_input_bound_judges_windows_of_fifty_steps_after_the_first(
    share: float, expected: list[tuple[str, int]]
) -> None:
    """The run's first step (set-up, batches fetched before the loop) is left out: a slow one
    changes nothing."""
    records = [timed(0, 30.0, 31.0)] + [timed(step, share) for step in range(1, 120)]
    diagnostics, found = judged(records)
    assert [(a.severity, a.step) for a in found] == expected
    if expected:
        assert found[0].rule == "input-bound" and f"{share:.0%}" in found[0].message, found[0].message
        assert diagnostics.counts == {"input-bound": 2}, "two windows of 50 steps were over"


def test_a_loaders_first_workers_starting_are_no_steady_state() -> None:
    """The step that waited for a loader's first worker processes is left out of the window."""
    records = [timed(0, 0.1), timed(1, 50.0, 51.0)] + [timed(step, 0.1) for step in range(2, 60)]
    assert judged(records, startups=frozenset({1}))[1] == []
    assert [a.step for a in judged(records)[1]] == [50], "without the start-up flag, that wait counts"


def test_input_bound_grows_graver_once() -> None:
    records = [timed(0, 0.0)] + [timed(step, 0.4 if step <= 50 else 0.8) for step in range(1, 200)]
    diagnostics, found = judged(records)
    assert [(a.severity, a.step) for a in found] == [("info", 50), ("warning", 100)]
    assert diagnostics.severities == {"input-bound": "warning"}, "for the end record"
    assert judged(records[:60])[0].severities == {"input-bound": "info"}
    assert judged(records, disabled=frozenset({"input-bound"}))[0].counts == {}


def test_a_ranks_problems_are_its_rules_at_the_severity_it_reported() -> None:
    """--strict in the main process reads each rank's end record: an input-bound a rank
    reported as a warning is a problem, as information it is not."""
    counts = [{"input-bound": 2}, {"input-bound": 1}, {"unused-param": 1, "input-bound": 1}]
    severities = [{"input-bound": "warning"}, {"input-bound": "info"}, {}]
    ends: dict[int, tuple[Path, EndRecord | None]] = {
        rank: (Path(f"t.rank{rank}.jsonl"), EndRecord("ok", 0, 1.0, 9, count, severities=severity))
        for rank, (count, severity) in enumerate(zip(counts, severities))
    }
    ends[3] = (Path("t.rank3.jsonl"), None)  # killed: no end record
    assert SpawnedRanks.problems(ends) == [("warning", "input-bound on rank 0"), ("warning", "unused-param on rank 2")]


def memory_run(values: list[float], key: str = "rss") -> list[Anomaly]:
    return judged([timed(step, 0.0, memory={key: int(value)}) for step, value in enumerate(values)])[1]


def test_memory_growth_is_a_floor_rising_through_eight_stretches() -> None:
    """10 warm-up steps, then 8 stretches of 25: fires at step 209 when each stretch's lowest
    value is above the previous one's, by 16 MiB in all."""
    leak = [400 * MiB + 100 * MiB * (step > 5) + step * 100 * 1024 for step in range(300)]
    found = memory_run(leak)
    assert [(a.rule, a.severity, a.step) for a in found] == [("memory-growth", "warning", 209)]
    assert "resident memory (RSS)" in found[0].message and "100 KiB a step" in found[0].message, found[0].message
    assert [a.step for a in memory_run(leak, key="allocated")] == [209]


@pytest.mark.parametrize(
    "shape",
    ["flat", "sawtooth", "small leak", "one jump", "filled then flat"],
)
def test_memory_that_does_not_keep_rising_is_no_growth(shape: str) -> None:
    base = 400 * MiB
    values = {
        "flat": [base] * 400,
        "sawtooth": [base + (step % 40) * MiB for step in range(400)],  # freed every 40 steps
        "small leak": [base + step * 10 * 1024 for step in range(400)],  # 10 KiB a step: 4 MiB in 400 steps
        "one jump": [base + 64 * MiB * (step > 100) for step in range(400)],
        "filled then flat": [base + min(step, 150) * MiB for step in range(400)],  # a cache filled by step 150
    }[shape]
    assert memory_run(values) == []


def test_a_leak_that_begins_late_is_seen_as_the_stretches_double() -> None:
    """Flat for 1,000 steps, then 200 KiB a step: the window (the last 8 stretches, which
    double as the run goes) spans at least the later half of the run, so the leak shows
    before the run is 2.5 times as long."""
    values = [300 * MiB + max(0, step - 1000) * 200 * 1024 for step in range(3000)]
    [found] = memory_run(values)
    assert 1000 < found.step <= 2500, found

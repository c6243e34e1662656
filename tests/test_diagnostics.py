"""Diagnostics in-process: what the nonfinite rule names and how often it looks; what vanishing-grad calls vanishing."""

from __future__ import annotations

import math

import pytest

from stepdbg.diagnostics import Diagnostics, Thresholds
from stepdbg.schema import Anomaly, AnomalySteps, StepRecord


def record(optimizer: int, step: int, loss: float, grad_norm: float | None = 1.0) -> StepRecord:
    return StepRecord(
        optimizer=optimizer, step=step, t=0.0, calls=["zero_grad", "backward", "step"], backward_calls=1,
        skipped=False, loss=loss, grad_norm=grad_norm, group_grad_norms=[grad_norm], lr=[0.1], time={},
    )


def test_nonfinite_names_a_culprit_once_per_optimizer() -> None:
    found: list[Anomaly] = []
    diagnostics = Diagnostics(Thresholds(), frozenset(), found.append)
    asked: list[int] = []

    def culprit_of(optimizer: int) -> str:
        asked.append(optimizer)
        return f"net{optimizer}.weight"

    for step in range(3):
        for optimizer in (0, 1):
            diagnostics.check_step(record(optimizer, step, math.nan, math.nan), ["w"], None, [], lambda o=optimizer: culprit_of(o))
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
    diagnostics.check_step(record(0, 0, math.inf, math.inf), ["w"], None, [], never)
    assert diagnostics.counts == {}


def test_a_nonfinite_loss_with_finite_gradients_is_information() -> None:
    """A mean over an empty batch: NaN loss, zero gradients, no harm done; nor where the loss
    reached none of the step's parameters. A NaN gradient later is still the error."""
    found: list[Anomaly] = []
    diagnostics = Diagnostics(Thresholds(), frozenset(), found.append)
    diagnostics.check_step(record(0, 0, math.nan, 0.0), ["w"], None, [])
    diagnostics.check_step(record(0, 1, math.nan, 0.0), ["w"], None, [])
    diagnostics.check_step(record(0, 2, 1.0, math.nan), ["w"], None, [], lambda: "w")
    diagnostics.check_step(record(1, 0, math.nan, None), ["v"], None, [])
    assert [(a.rule, a.severity, a.optimizer, a.step, a.param) for a in found] == [
        ("nonfinite-loss", "info", 0, 0, None),
        ("nonfinite", "error", 0, 2, "w"),
        ("nonfinite-loss", "info", 1, 0, None),
    ]
    assert found[0].message == "loss is nan at step 0, but the gradients the step used are finite"
    assert found[2].message == "loss is nan at step 0, but no gradient reached the step"
    assert diagnostics.counts == {"nonfinite-loss": 3, "nonfinite": 1}


NAMES = ["stem.weight", "stem.bias", "branch.weight", "branch.bias", "head.weight", "head.bias"]


def vanishing_reports(grads: list[float], updates: list[float | None] | None, steps: int = 3) -> list[tuple[int, str | None]]:
    """The vanishing-grad reports over ``steps`` detail steps with these per-parameter numbers."""
    found: list[Anomaly] = []
    diagnostics = Diagnostics(Thresholds(), frozenset(), found.append)
    for step in range(steps):
        detail = record(0, step, 1.0)
        detail.param_grad_norms = dict(zip(NAMES, grads))
        if updates is not None:
            detail.param_update_ratios = dict(zip(NAMES, updates))
        diagnostics.check_step(detail, NAMES, list(grads), [])
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
        diagnostics.check_step(bad, ["w"], None, [], lambda: "w")
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
    diagnostics = Diagnostics(Thresholds(), frozenset({"exploding-grad"}), lambda anomaly: None, written.append)
    for step in range(3):
        for optimizer in (0, 1):
            diagnostics.report("missing-zero-grad", step, optimizer, "again")
            diagnostics.report("exploding-grad", step, optimizer, "disabled: neither counted nor written")
            diagnostics.check_step(record(optimizer, step, 1.0), ["w"], None, [])
    diagnostics.report("missing-zero-grad", 3, 0, "again")
    diagnostics.check_step(record(0, 3, 1.0), ["w"], None, [])
    diagnostics.check_step(record(1, 3, 1.0), ["w"], None, [])  # optimizer 1's stretch is over
    assert [(a.optimizer, a.first_step, a.last_step, a.count) for a in written] == [(1, 0, 2, 3)]
    diagnostics.close()
    assert [(a.optimizer, a.first_step, a.last_step, a.count) for a in written][1:] == [(0, 0, 3, 4)]
    assert diagnostics.counts == {"missing-zero-grad": 7}

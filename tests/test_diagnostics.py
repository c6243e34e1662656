"""Diagnostics in-process: what the nonfinite rule names and how often it looks; what vanishing-grad calls vanishing."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from stepdbg.diagnostics import Diagnostics
from stepdbg.facts import StepFinished
from stepdbg.rules import Thresholds
from stepdbg.schema import Anomaly, StepRecord


def record(optimizer: int, step: int, loss: float, grad_norm: float | None = 1.0) -> StepRecord:
    return StepRecord(
        optimizer=optimizer, step=step, t=0.0, calls=["zero_grad", "backward", "step"], backward_calls=1,
        skipped=False, loss=loss, grad_norm=grad_norm, group_grad_norms=[grad_norm], lr=[0.1], time={},
    )


def finished(
    record: StepRecord,
    names: list[str],
    param_norms: list[float | None] | None = None,
    culprit: Callable[[], str | None] = lambda: None,
) -> StepFinished:
    """A finished step whose trainable parameters all had a gradient, after a backward."""
    return StepFinished(record, names, param_norms, [], culprit, True)


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


def vanishing_reports(grads: list[float], updates: list[float | None] | None, steps: int = 3) -> list[tuple[int, str | None]]:
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

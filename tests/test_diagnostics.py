"""Diagnostics in-process: what the nonfinite rule names and how often it looks; what vanishing-grad calls vanishing."""

from __future__ import annotations

import math

import pytest

from stepdbg.diagnostics import Diagnostics, Thresholds
from stepdbg.schema import Anomaly, StepRecord


def record(optimizer: int, step: int, loss: float) -> StepRecord:
    return StepRecord(
        optimizer=optimizer, step=step, t=0.0, calls=["zero_grad", "backward", "step"], backward_calls=1,
        skipped=False, loss=loss, grad_norm=1.0, group_grad_norms=[1.0], lr=[0.1], time={},
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
            diagnostics.check_step(record(optimizer, step, math.nan), ["w"], None, [], lambda o=optimizer: culprit_of(o))
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
    diagnostics.check_step(record(0, 0, math.inf), ["w"], None, [], never)
    assert diagnostics.counts == {}


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

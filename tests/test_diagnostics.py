"""Diagnostics in-process: what the nonfinite rule names, and how often it looks."""

from __future__ import annotations

import math

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

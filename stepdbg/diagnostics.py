"""Runs the rules (`stepdbg.rules`) on what the collector reports, and reports what they find.

Each fact goes to the rules that judge its kind; each finished step to the step
rules of its optimizer (made at its first step, so that each keeps that
optimizer's history). A disabled rule is never made, and costs nothing. Each
problem is reported once per rule and optimizer, then only counted.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from .facts import StepFinished
from .rules import RULES, FactRule, Finding, Rule, StepRule, Thresholds, has_problems
from .schema import Anomaly


class Diagnostics:
    """Hands facts and finished steps to the enabled rules; reports each problem once per
    (rule, optimizer) and counts its repeats."""

    def __init__(self, thresholds: Thresholds, disabled: frozenset[str], emit: Callable[[Anomaly], None]) -> None:
        self.thresholds = thresholds
        self.disabled = disabled
        self._emit = emit
        self.counts: dict[str, int] = {}
        self._reported: set[tuple[str, int | None]] = set()
        enabled = [rule for rule in RULES if rule.id not in disabled]
        self._judges: dict[type, list[FactRule]] = {}
        """Per kind of fact, the rules that judge it."""
        for rule in enabled:
            if issubclass(rule, FactRule):
                judge = rule(thresholds)
                for kind in rule.facts:
                    self._judges.setdefault(kind, []).append(judge)
        step_rules = [rule for rule in enabled if issubclass(rule, StepRule)]
        self._step_rules = (
            [rule for rule in step_rules if rule.nonfinite],
            [rule for rule in step_rules if not rule.nonfinite and not rule.detail],
            [rule for rule in step_rules if rule.detail],
        )
        """The step rules: those for non-finite steps alone, every step's, detail steps'."""
        self._watching: dict[int | None, tuple[list[StepRule], list[StepRule], list[StepRule]]] = {}
        """Per optimizer, its step rules (made for it, as `_step_rules` sorts them)."""

    def judges(self, kind: type) -> bool:
        """Whether an enabled rule judges facts of ``kind`` (none: the collector need not look for them)."""
        return kind in self._judges

    def judge(self, fact: object, t: float) -> bool:
        """Hand ``fact`` (with ``optimizer`` and ``step``) to its rules, and report what they find
        at ``t``. Whether they found a problem."""
        found = False
        for rule in self._judges.get(type(fact), ()):
            finding = rule.check(fact)
            if finding is not None:
                self.report(rule, finding, fact.step, fact.optimizer, t)  # type: ignore[attr-defined]
                found = True
        return found

    def check_step(self, step: StepFinished) -> None:
        """Judge a finished step with its optimizer's step rules (each on the steps it needs)."""
        record = step.record
        if record.skipped:
            return
        watching = self._watching.get(record.optimizer)
        if watching is None:
            nonfinite, every, detail = self._step_rules
            watching = self._watching[record.optimizer] = (
                [rule(self.thresholds) for rule in nonfinite],
                [rule(self.thresholds) for rule in every],
                [rule(self.thresholds) for rule in detail],
            )
        loss, norm = record.loss, record.grad_norm
        if (loss is not None and not math.isfinite(loss)) or (norm is not None and not math.isfinite(norm)):
            self._check(watching[0], step)
        self._check(watching[1], step)
        if step.param_norms is not None:
            self._check(watching[2], step)

    def _check(self, rules: list[StepRule], step: StepFinished) -> None:
        record = step.record
        for rule in rules:
            finding = rule.check(step)
            if finding is not None:
                self.report(rule, finding, record.step, record.optimizer, record.t)

    def report(self, rule: Rule, finding: Finding, step: int, optimizer: int | None, t: float) -> None:
        """Count the problem; emit it the first time for this rule and optimizer."""
        self.counts[rule.id] = self.counts.get(rule.id, 0) + 1
        key = (rule.id, optimizer)
        if key in self._reported:
            return
        self._reported.add(key)
        self._emit(Anomaly(rule.id, rule.severity, step, optimizer, finding.param, finding.message, rule.hint, t))

    @property
    def found_problems(self) -> bool:
        """Whether a warning or an error was reported (for --strict)."""
        return has_problems(self.counts)

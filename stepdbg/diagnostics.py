"""Runs the rules (`stepdbg.rules`) on what the collector reports, and reports what they find.

Each fact goes to the rules that judge its kind; each finished step to the step
rules of its optimizer (made at its first step, so that each keeps that
optimizer's history), then to the run's rules. A disabled rule is never made, and
costs nothing. Each problem is reported once per rule and optimizer (once per run
for a `RunRule`; once more where it grows graver), then only counted, and where it
fired is written as stretches of steps (`AnomalySteps`), not a record per repeat.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from .facts import StepFinished
from .rules import RULES, FactRule, Finding, Rule, RunRule, StepRule, Thresholds
from .schema import SEVERITIES, Anomaly, AnomalySteps


class Diagnostics:
    """Hands facts and finished steps to the enabled rules; reports each problem once per
    (rule, optimizer), counts its repeats, and writes where they were."""

    def __init__(
        self,
        thresholds: Thresholds,
        disabled: frozenset[str],
        emit: Callable[[Anomaly], None],
        write_steps: Callable[[AnomalySteps], None] = lambda steps: None,
    ) -> None:
        self.thresholds = thresholds
        self.disabled = disabled
        self._emit = emit
        self.counts: dict[str, int] = {}
        self.severities: dict[str, str] = {}
        """The gravest severity each rule was reported at (for the end record)."""
        self._stretches = Stretches(write_steps)
        self._reported: dict[tuple[str, int | None], int] = {}
        """The gravest severity (its place in `SEVERITIES`) reported per rule and optimizer
        (per rule alone for those reported once per run)."""
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
        self._run_rules: list[RunRule] = [rule(thresholds) for rule in enabled if issubclass(rule, RunRule)]

    def judges(self, kind: type) -> bool:
        """Whether an enabled rule judges facts of ``kind`` (none: the collector need not look for them)."""
        return kind in self._judges

    def find(self, fact: object) -> list[tuple[FactRule, Finding]]:
        """What the rules that judge ``fact`` find in it, not reported yet (see `report`)."""
        found = []
        for rule in self._judges.get(type(fact), ()):
            finding = rule.check(fact)
            if finding is not None:
                found.append((rule, finding))
        return found

    def judge(self, fact: object, t: float) -> bool:
        """Hand ``fact`` (with ``optimizer`` and ``step``) to its rules, and report what they find
        at ``t``. Whether they found a problem."""
        found = self.find(fact)
        for rule, finding in found:
            self.report(rule, finding, fact.step, fact.optimizer, t)  # type: ignore[attr-defined]
        return bool(found)

    def check_step(self, step: StepFinished) -> None:
        """Judge a finished step: with its optimizer's step rules (each on the steps it needs;
        none for a step GradScaler skipped), then the stretches of the rules that did not fire
        at it are over, then with the run's rules."""
        record = step.record
        if not record.skipped:
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
        self._stretches.passed(record.optimizer, record.step)
        self._check(self._run_rules, step)

    def _check(self, rules: list[StepRule] | list[RunRule], step: StepFinished) -> None:
        record = step.record
        for rule in rules:
            finding = rule.check(step)
            if finding is not None:
                self.report(rule, finding, record.step, record.optimizer, record.t)

    def report(self, rule: Rule, finding: Finding, step: int, optimizer: int | None, t: float) -> None:
        """Count the problem, and emit it the first time for this rule and optimizer (or run),
        and once more where it is graver than before."""
        rule_id = rule.id
        self.counts[rule_id] = self.counts.get(rule_id, 0) + 1
        self._stretches.add(rule_id, optimizer, step, t)
        severity = finding.severity or rule.severity
        grade = SEVERITIES.index(severity)
        scope = (rule_id, None if rule.once_per_run else optimizer)
        reported = self._reported.get(scope)
        if reported is not None and grade <= reported:
            return
        self._reported[scope] = grade
        previous = self.severities.get(rule_id)
        if previous is None or grade > SEVERITIES.index(previous):
            self.severities[rule_id] = severity
        self._emit(Anomaly(rule_id, severity, step, optimizer, finding.param, finding.message, rule.hint, t))

    def close(self) -> None:
        """The run is over: write where the rules still firing fired."""
        self._stretches.close()


STRETCH_SECONDS = 1.0
"""A stretch of steps a rule keeps firing at is written at least this often (run time), so
that a killed run keeps where its rules fired."""


@dataclass
class _Stretch:
    first_step: int
    last_step: int
    count: int
    started: float


class Stretches:
    """Where each rule fired, repeats included, as stretches of consecutive steps: one record
    for a rule firing at every step, where a record per repeat would double the trace.

    A stretch ends at the first step of its optimizer the rule did not fire at (`passed`),
    and is cut at a new step once it has lasted `STRETCH_SECONDS`."""

    def __init__(self, write: Callable[[AnomalySteps], None]) -> None:
        self._write = write
        self._open: dict[tuple[str, int | None], _Stretch] = {}

    def add(self, rule: str, optimizer: int | None, step: int, t: float) -> None:
        key = (rule, optimizer)
        stretch = self._open.get(key)
        if stretch is not None:
            if stretch.first_step <= step <= stretch.last_step:
                stretch.count += 1
                return
            if step == stretch.last_step + 1 and t - stretch.started < STRETCH_SECONDS:
                stretch.last_step, stretch.count = step, stretch.count + 1
                return
            self._close(key)
        self._open[key] = _Stretch(step, step, 1, t)

    def passed(self, optimizer: int | None, step: int) -> None:
        """``optimizer``'s step ``step`` is judged: the stretches that did not reach it are over."""
        if self._open:  # nothing to do in a healthy run
            for key in [key for key, stretch in self._open.items() if key[1] == optimizer and stretch.last_step < step]:
                self._close(key)

    def close(self) -> None:
        """The run is over: write every stretch still going."""
        for key in list(self._open):
            self._close(key)

    def _close(self, key: tuple[str, int | None]) -> None:
        stretch = self._open.pop(key)
        self._write(AnomalySteps(key[0], key[1], stretch.first_step, stretch.last_step, stretch.count))

"""Which rules fired within a view of a trace (``show --steps A:B``, ``--optimizer N``), and how often.

A rule's `Anomaly` record says where it first fired on an optimizer; its
`AnomalySteps` records say at which steps it fired, repeats included. A rule first
reported before the range that kept firing through it is in the view, said as
such ("first at step 1, 59 times in the run; in this range at 10 steps, 10–19").
A trace that does not say where a rule repeated (written before `AnomalySteps`
existed, or cut short before its first one) is not taken to say it stopped: the
rule is in the view, marked as not located, unless the end record shows it never
repeated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .schema import Anomaly, AnomalySteps, EndRecord

if TYPE_CHECKING:
    from .view import StepFilter


def has_range(step_filter: StepFilter) -> bool:
    """Whether the view is a range of steps, not the whole run."""
    return bool(step_filter.start) or step_filter.stop is not None


@dataclass
class StepsInView:
    """The steps of the view a rule fired at: how many, the first and the last."""

    steps: int
    first_step: int
    last_step: int

    def to_json(self) -> dict[str, int]:
        return {"steps": self.steps, "first_step": self.first_step, "last_step": self.last_step}


@dataclass
class Firing:
    """One rule on one optimizer: its first report, and the steps the trace says it fired at."""

    rule: str
    optimizer: int | None
    first: Anomaly | None = None
    located: bool = False
    """Whether any `AnomalySteps` record names it."""
    count: int = 0
    in_view: StepsInView | None = None

    @property
    def first_step(self) -> int:
        """Where it first fired (as far as the trace says)."""
        if self.first is not None:
            return self.first.step
        return self.in_view.first_step if self.in_view is not None else 0

    @property
    def report(self) -> Anomaly:
        """Its first report; a blank one where the trace has its steps and no report (put together by hand)."""
        return self.first or Anomaly(self.rule, "?", self.first_step, self.optimizer, None, "", "")

    def add_report(self, anomaly: Anomaly) -> None:
        if self.first is None or anomaly.step < self.first.step:
            self.first = anomaly

    def add_steps(self, record: AnomalySteps, step_filter: StepFilter) -> None:
        self.located = True
        self.count += record.count
        low = max(record.first_step, step_filter.start)
        high = record.last_step if step_filter.stop is None else min(record.last_step, step_filter.stop - 1)
        if low > high:
            return
        seen = self.in_view
        if seen is None:
            self.in_view = StepsInView(high - low + 1, low, high)
        else:
            seen.steps += high - low + 1
            seen.first_step, seen.last_step = min(seen.first_step, low), max(seen.last_step, high)

    def shown(self, step_filter: StepFilter, may_repeat: bool) -> bool:
        """Whether it belongs in the view: it fired there, or (not located) may have."""
        if self.in_view is not None:
            return True
        first = self.first
        if first is None:
            return False
        if step_filter.admits(first.optimizer, first.step):
            return True
        return not self.located and may_repeat and first.step < step_filter.start


@dataclass
class AnomalyGroup:
    """One rule in the view, over the optimizers it fired on: where first, how often, which parameters.

    ``count`` is in the run (for the optimizer in view, where the trace says); ``in_view``
    is None where the trace does not say at which steps the rule fired."""

    rule: str
    severity: str
    first_step: int
    optimizer: int | None
    message: str
    hint: str
    count: int
    in_view: StepsInView | None
    params: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "severity": self.severity,
            "first_step": self.first_step,
            "optimizer": self.optimizer,
            "count": self.count,
            "in_view": self.in_view.to_json() if self.in_view is not None else None,
            "params": self.params,
            "message": self.message,
            "hint": self.hint,
        }


class AnomalyLog:
    """Every anomaly and `AnomalySteps` record of the optimizers in view, folded per (rule, optimizer)."""

    def __init__(self, step_filter: StepFilter) -> None:
        self.filter = step_filter
        self._firings: dict[tuple[str, int | None], Firing] = {}
        self._reports: dict[str, int] = {}  # anomaly records per rule, every optimizer

    def add(self, record: Anomaly | AnomalySteps) -> None:
        if isinstance(record, Anomaly):
            self._reports[record.rule] = self._reports.get(record.rule, 0) + 1
        if not self.filter.admits_optimizer(record.optimizer):
            return
        key = (record.rule, record.optimizer)
        firing = self._firings.get(key)
        if firing is None:
            firing = self._firings[key] = Firing(record.rule, record.optimizer)
        if isinstance(record, Anomaly):
            firing.add_report(record)
        else:
            firing.add_steps(record, self.filter)

    def firings(self, end: EndRecord | None) -> list[Firing]:
        """The firings in view, in the order they first fired."""
        shown = [
            firing for firing in self._firings.values() if firing.shown(self.filter, self._may_repeat(firing.rule, end))
        ]
        return sorted(shown, key=lambda firing: firing.first_step)

    def _may_repeat(self, rule: str, end: EndRecord | None) -> bool:
        """Whether a rule may have fired after its anomaly records: the end record counts more
        firings than there are records, or there is no end record to tell."""
        return end is None or end.anomalies.get(rule, 0) > self._reports.get(rule, 0)

    def groups(self, end: EndRecord | None) -> dict[str, AnomalyGroup]:
        """One group per rule in view, in the order the rules first fired."""
        by_rule: dict[str, list[Firing]] = {}
        for firing in self.firings(end):
            by_rule.setdefault(firing.rule, []).append(firing)
        return {rule: self._group(rule, firings, end) for rule, firings in by_rule.items()}

    def _group(self, rule: str, firings: list[Firing], end: EndRecord | None) -> AnomalyGroup:
        """``firings`` are the rule's in view, the first first."""
        admitted = [firing for firing in self._firings.values() if firing.rule == rule]
        if all(firing.located for firing in admitted):
            count = sum(firing.count for firing in admitted)
        elif end is not None and rule in end.anomalies:
            count = end.anomalies[rule]
        else:
            count = sum(firing.first is not None for firing in admitted)
        spans = [firing.in_view for firing in firings if firing.in_view is not None]
        in_view = None
        if spans and all(firing.located for firing in firings):
            first_step, last_step = min(s.first_step for s in spans), max(s.last_step for s in spans)
            in_view = StepsInView(sum(s.steps for s in spans), first_step, last_step)
        params = list(dict.fromkeys(f.first.param for f in firings if f.first is not None and f.first.param))
        report = next((firing for firing in firings if firing.first is not None), firings[0]).report
        return AnomalyGroup(
            rule, report.severity, report.step, report.optimizer, report.message, report.hint, count, in_view, params
        )

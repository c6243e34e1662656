"""The diagnostic rules, one class each, in one registry.

A rule names a training-loop bug at the step where it first happens. Each is a class
(`base.Rule`) holding what it is (``id``, ``severity``, a one-line ``summary``, the
precise ``condition``, the ``hint``) and its ``check``. The collector reports facts
(`stepdbg.facts`: what a step consumed, what a backward filled, what was cleared,
when; and each finished step); `stepdbg.diagnostics` hands each fact to the rules
that judge it, and reports each problem once.

By family, each module ending with its ``RULES``: `ordering` (zero_grad, backward,
step and the scheduler in the wrong order), `numeric` (gradients not finite,
exploding, vanishing), `params` (parameters the loop never trains, though it means
to), `resources` (a loop waiting for its data, memory that keeps growing).

`RULES` below is the one list of them all: ``--disable`` takes their ids, ``--strict``
their severities, and the README's rule table and docs/rules.md are checked against
them (tests/test_readme.py). A new rule is a class in its family's module, added to
that module's ``RULES``, with a ``tests/scripts/bug_*.py`` that makes it fire
(`tests/test_rules.py`).
"""

from __future__ import annotations

from . import numeric, ordering, params, resources
from .base import ERROR, INFO, WARNING, FactRule, Finding, Rule, RunRule, StepRule, Thresholds

RULES: tuple[type[Rule], ...] = (*ordering.RULES, *numeric.RULES, *params.RULES, *resources.RULES)
"""Every rule, in the order the README and docs/rules.md list them."""

BY_ID: dict[str, type[Rule]] = {rule.id: rule for rule in RULES}

IDS: tuple[str, ...] = tuple(BY_ID)


def severity_of(rule: str) -> str:
    """A rule's own severity (`INFO` for an id this version does not know: a newer trace's)."""
    return BY_ID[rule].severity if rule in BY_ID else INFO


__all__ = [
    "BY_ID",
    "ERROR",
    "IDS",
    "INFO",
    "RULES",
    "WARNING",
    "FactRule",
    "Finding",
    "Rule",
    "RunRule",
    "StepRule",
    "Thresholds",
    "severity_of",
]

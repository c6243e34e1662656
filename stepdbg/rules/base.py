"""What a rule is: what it names (for the terminal, the trace, the README and
docs/rules.md), how grave it is, and its check.

Three kinds, by what they judge:

- a `FactRule` judges facts the collector reports about gradient state (`stepdbg.facts`):
  it is made once per run and holds nothing;
- a `StepRule` judges each finished step of one optimizer (its record and the norms
  already computed): it is made for each optimizer at its first step, and keeps that
  optimizer's history (a moving average, a streak) in itself;
- a `RunRule` judges every finished step of the run, whatever optimizer made it: it is
  made once per run, keeps the run's history, and reports a problem once per run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ..facts import StepFinished

ERROR = "error"
"""The loop is wrong."""
WARNING = "warning"
"""The loop is probably wrong."""
INFO = "info"
"""Worth knowing; `--strict` ignores it."""


@dataclass(frozen=True, slots=True)
class Finding:
    """A problem a rule found: what to say, and the parameter it is about."""

    message: str
    param: str | None = None
    severity: str | None = None
    """Graver than the rule's own, where the rule has two (see `Rule.graver`)."""


@dataclass
class Thresholds:
    """Defaults for the numeric rules (documented in docs/rules.md)."""

    explode_ratio: float = 100.0
    """exploding-grad: global norm above this many times its recent average."""
    explode_absolute: float = 1e8
    """exploding-grad: a global norm above this is absurd whatever the history."""
    explode_warmup: int = 10
    """exploding-grad: steps of history before the ratio test applies."""
    vanish_ratio: float = 1e-6
    """vanishing-grad: a parameter's norm below this fraction of the largest one."""
    vanish_detail_steps: int = 3
    """vanishing-grad: consecutive detail steps the condition must hold."""
    patience: int = 20
    """unused-param, zero-update: consecutive steps the condition must hold."""
    input_window: int = 50
    """input-bound: steps judged together (the run's first step and worker start-ups left out)."""
    input_share: float = 0.3
    """input-bound: information when DataLoader waits take more than this share of those steps' time."""
    input_share_warning: float = 0.6
    """input-bound: a warning past this share."""
    memory_warmup: int = 10
    """memory-growth: first steps left out (optimizer state, caches and lazy imports fill them)."""
    memory_stretches: int = 8
    """memory-growth: stretches of steps, each of whose lowest memory must be above the previous one's."""
    memory_stretch: int = 25
    """memory-growth: steps in a stretch at first; stretches double in length as the run grows, so that
    the window always spans at least the later half of the run."""
    memory_growth_bytes: int = 16 << 20
    """memory-growth: the least rise, from the first stretch's lowest to the last's, worth a warning."""


class Rule:
    """One diagnostic rule. A subclass fills in these five and a ``check``."""

    id: ClassVar[str]
    """What ``--disable`` takes, the trace records and the terminal prints."""
    severity: ClassVar[str]
    """`ERROR`, `WARNING` or `INFO`."""
    summary: ClassVar[str]
    """When it fires, in one line of at most 25 words (markdown): the README's rule table."""
    condition: ClassVar[str]
    """When it fires, precisely (markdown): the paragraph that opens its section in docs/rules.md."""
    hint: ClassVar[str]
    """The fix, in one line of plain text, printed after the message."""
    graver: ClassVar[tuple[str, str] | None] = None
    """A graver severity it also reports at, and when (``(WARNING, "past 60%")``): reported
    again, once, when a finding is that grave."""
    once_per_run: ClassVar[bool] = False
    """Reported once per run, not once per optimizer."""

    def __init__(self, thresholds: Thresholds) -> None:
        self.thresholds = thresholds


class FactRule(Rule):
    """A rule judged from the gradient-state facts the collector reports."""

    facts: ClassVar[tuple[type, ...]]
    """The kinds of fact it judges: only those reach its ``check``."""

    def check(self, fact: Any) -> Finding | None:
        raise NotImplementedError


class StepRule(Rule):
    """A rule judged from each finished step of one optimizer."""

    nonfinite: ClassVar[bool] = False
    """It fires only on a step whose loss or gradient norm is NaN or Inf: it runs on those
    alone, before the others (a healthy step does not pay for it)."""
    detail: ClassVar[bool] = False
    """It reads per-parameter norms, which only detail steps (``--every``) have: it runs on
    those, after the others."""

    def check(self, step: StepFinished) -> Finding | None:
        raise NotImplementedError


class RunRule(Rule):
    """A rule judged from every finished step of the run (GradScaler's skipped ones too)."""

    once_per_run = True

    def check(self, step: StepFinished) -> Finding | None:
        raise NotImplementedError

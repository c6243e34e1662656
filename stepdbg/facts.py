"""What the collector tells the rules: facts about a loop's gradient state, and each finished step.

The collector states what happened (a step consumed gradients a previous step had
already consumed; a clear came between a backward and the step); the rules in
`stepdbg.rules` judge whether that is a mistake and say so. A gradient-state fact
is made only where something unusual happened: a plain iteration (one clear, one
backward, one step) reports nothing but that its step finished.

Each fact names the optimizer (its index) and the step (its number) it is about.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .data_wait import LoaderSettings
from .schema import StepRecord


@dataclass(slots=True)
class AccumulatedOnConsumed:
    """A backward added to gradients a previous step had already consumed, and this step
    uses them: ``param`` names the first such parameter (None: unknown)."""

    optimizer: int
    step: int
    param: str | None


@dataclass(slots=True)
class ClearedBeforeStep:
    """A clear came after the last backward, and the step finds no gradient set since (by
    hand or by a backward): it applies nothing of what the backward computed.
    ``stepped_before_backward``: the optimizer's first step came before any backward."""

    optimizer: int
    step: int
    stepped_before_backward: bool


@dataclass(slots=True)
class GradientsGone:
    """The step finds no gradient at all, though a backward reached its parameters since
    they last started accumulating: cleared in a way no call shows (``p.grad = None``)."""

    optimizer: int
    step: int


@dataclass(slots=True)
class AccumulationCleared:
    """The step used only the last ``kept`` of the ``kept + discarded`` backward passes
    since its previous step: clears between them threw the others away unused, and so
    for ``streak`` steps in a row (one optimizer, its parameters untouched in between)."""

    optimizer: int
    step: int
    kept: int
    discarded: int
    streak: int


@dataclass(slots=True)
class ConsumedAgain:
    """The step ran with no backward since its previous step, and finds the gradients that
    step consumed (not gradients set by hand, nor a rank shadowing others under ``Join``)."""

    optimizer: int
    step: int


@dataclass(slots=True)
class SchedulerAhead:
    """An lr scheduler (``scheduler``, its class name) stepped before the optimizer's step
    ``step`` used the gradients waiting for it, or before the optimizer's first step."""

    optimizer: int
    step: int
    scheduler: str


@dataclass(slots=True)
class UnoptimizedGradient:
    """``param`` receives gradients, and no optimizer holds it; seen at a detail step of the
    optimizer whose models hold it. The facts that cost a walk over the model are functions,
    asked only where a rule needs them."""

    optimizer: int
    step: int
    param: str
    was_frozen: bool
    """It did not require grad at an earlier detail step."""
    siblings_optimized: Callable[[], bool]
    """Some optimizer holds another parameter of its module."""
    holds_only_frozen: Callable[[], bool]
    """The optimizer holds no parameter that requires grad."""
    holds_old_params: Callable[[], bool]
    """The optimizer holds parameters its models no longer have (a layer replaced since)."""


@dataclass(slots=True)
class StepFinished:
    """A step record is complete, with the numbers computed for it."""

    record: StepRecord
    names: list[str]
    """The optimizer's parameters' names, in its order (a new list when its groups change)."""
    param_norms: list[float | None] | None
    """Per-parameter gradient norms, aligned with ``names``: detail steps only."""
    missing: list[int]
    """Positions of the trainable parameters that had no gradient."""
    culprit: Callable[[], str | None]
    """The first parameter whose gradient is not finite (reads values: call it once)."""
    backward_ran: bool
    """Backward passes ran since the optimizer's previous step, whether or not they reached it."""
    data_startup: bool = False
    """Its data wait includes a loader's first workers starting (see `DataWaits.startup`)."""
    loader: LoaderSettings | None = None
    """The settings of the last DataLoader fetched from."""

"""The ordering rules: zero_grad, backward, step and the scheduler called in the wrong order.

They judge gradient *state* (which gradients a step consumed, which a backward filled,
what was cleared since), not call patterns, so that gradient accumulation, GANs,
closures and the other correct-but-odd loops stay silent; the collector works that
state out and reports the facts (`stepdbg.facts`).
"""

from __future__ import annotations

from ..facts import (
    AccumulatedOnConsumed,
    AccumulationCleared,
    ClearedBeforeStep,
    ConsumedAgain,
    GradientsGone,
    SchedulerAhead,
)
from .base import ERROR, WARNING, FactRule, Finding

DISCARD_STREAK = 3
"""Steps in a row that each find backward passes of theirs cleared unused before a fresh one
(zero_grad inside a gradient-accumulation loop): one such step is a skipped batch, not a bug."""


class MissingZeroGrad(FactRule):
    id = "missing-zero-grad"
    severity = ERROR
    summary = "a step uses gradients accumulated on top of those a previous step consumed"
    condition = (
        "A step uses gradients accumulated on top of those a previous step already consumed, for any subset of"
        " its parameters (with several optimizers or modules, one left uncleared is enough)."
    )
    hint = (
        "call optimizer.zero_grad() (or model.zero_grad()) once per step, before backward(); "
        "with several optimizers or modules, clear each of them"
    )
    facts = (AccumulatedOnConsumed,)

    def check(self, fact: AccumulatedOnConsumed) -> Finding:
        step, first = fact.step, f" (first: {fact.param})" if fact.param else ""
        message = f"step {step} used gradients accumulated on top of those step {step - 1} had already consumed{first}"
        return Finding(message, fact.param)


class ZeroGradBeforeStep(FactRule):
    id = "zero-grad-before-step"
    severity = ERROR
    summary = "gradients a backward filled are cleared before the step uses them"
    condition = """Either of:

- the gradients of this iteration's backward were cleared (any way: `zero_grad`,
  `p.grad = None`, `p.grad.zero_()`) before the step ran, so the step applies
  nothing;
- 3 steps in a row, zero_grad ran between the backward passes a step accumulates
  (inside a gradient-accumulation loop), so that each step uses only the last of
  them: at least two clears a step throwing backward passes away, no more kept than
  thrown, one optimizer, the parameters untouched in between."""
    hint = "move zero_grad() before backward(), or after step()"
    facts = (ClearedBeforeStep, GradientsGone, AccumulationCleared)

    def check(self, fact: ClearedBeforeStep | GradientsGone | AccumulationCleared) -> Finding | None:
        if isinstance(fact, AccumulationCleared):
            if fact.streak < DISCARD_STREAK:
                return None
            return Finding(
                f"optimizer {fact.optimizer}'s step {fact.step} used only the last {fact.kept} of"
                f" {fact.kept + fact.discarded} backward passes since its previous step, for {fact.streak} steps in a"
                " row: zero_grad() between them cleared the others unused (inside a gradient-accumulation loop?)"
            )
        if isinstance(fact, ClearedBeforeStep) and fact.stepped_before_backward:
            return None  # the loop steps before backward: `StepWithoutBackward` names that
        return Finding(
            f"gradients were cleared after backward and before optimizer {fact.optimizer}'s step {fact.step}"
        )


class StepWithoutBackward(FactRule):
    id = "step-without-backward"
    severity = ERROR
    summary = "a step runs with no backward since its previous step"
    condition = (
        "A step runs with no backward since its previous step and finds the gradients that step consumed,"
        " unchanged or zeroed: step before backward, or step twice."
    )
    hint = "call loss.backward() before optimizer.step(), and step once per backward pass"
    facts = (ConsumedAgain, ClearedBeforeStep)

    def check(self, fact: ConsumedAgain | ClearedBeforeStep) -> Finding | None:
        optimizer, step = fact.optimizer, fact.step
        if isinstance(fact, ConsumedAgain):
            return Finding(f"optimizer {optimizer}'s step {step} ran with no backward since its previous step")
        if fact.stepped_before_backward:
            return Finding(f"optimizer {optimizer} steps before backward (step {step} found its gradients cleared)")
        return None


class SchedulerBeforeStep(FactRule):
    id = "scheduler-before-step"
    severity = WARNING
    summary = "an lr scheduler steps between a backward and the optimizer step, or before the first step"
    condition = (
        "An lr scheduler steps between a backward and the optimizer step that uses its gradients, or before the"
        " optimizer ever stepped. The schedule then runs one step ahead."
    )
    hint = "call scheduler.step() after optimizer.step()"
    facts = (SchedulerAhead,)

    def check(self, fact: SchedulerAhead) -> Finding:
        return Finding(f"{fact.scheduler}.step() ran before optimizer {fact.optimizer}'s step {fact.step}")


RULES = (MissingZeroGrad, ZeroGradBeforeStep, StepWithoutBackward, SchedulerBeforeStep)
"""This family's rules, in the order the README lists them."""

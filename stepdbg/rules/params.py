"""The parameter rules: parameters the loop never trains, though it means to.

A parameter the optimizer holds that never gets a gradient (`UnusedParam`), one that
gets gradients no optimizer applies (`NotInOptimizer`), a param group held at lr 0
(`ZeroUpdate`).
"""

from __future__ import annotations

from ..facts import StepFinished, UnoptimizedGradient
from .base import WARNING, FactRule, Finding, StepRule, Thresholds


class UnusedParam(StepRule):
    """Parameters that had no gradient at any step, where the same ones went without at
    every step. Where which parameters get gradients changes from step to step (a head
    per task, experts tokens are routed to, alternating losses), the loop computes
    conditionally: a parameter not used yet is not unused, and the rule stays quiet."""

    id = "unused-param"
    severity = WARNING
    summary = "a parameter the optimizer holds gets no gradient for `--patience` (20) steps"
    condition = (
        "A parameter the optimizer holds and that requires grad gets no gradient for `--patience` steps"
        " (default 20) from the start, the same parameters going without at every step. Where none of an"
        " optimizer's parameters gets one while backward passes run, the message says so: the optimizer holds"
        " a model the loop no longer uses (built before the model was built again)."
    )
    hint = (
        "the parameter is not part of the loss: look for a detached branch, .data, or an unused head;"
        " or set requires_grad=False"
    )

    def __init__(self, thresholds: Thresholds) -> None:
        super().__init__(thresholds)
        self.without_gradient: list[int] = []
        """Positions of the trainable parameters that had no gradient at any step so far, while
        no other parameter ever went without one (cleared for good once one does)."""
        self.steps = 0
        self.names: list[str] | None = None
        """The parameter names these count for: another list means the groups changed."""

    def check(self, step: StepFinished) -> Finding | None:
        names, missing = step.names, step.missing
        if names is not self.names:  # the first step, or the groups changed: count afresh
            self.names = names
            self.without_gradient = list(missing)
            self.steps = 0
        if not self.without_gradient:
            return None
        if missing != self.without_gradient:
            self.without_gradient = []
            return None
        self.steps += 1
        if not step.backward_ran or self.steps < self.thresholds.patience:
            return None
        index = missing[0]
        name = names[index] if index < len(names) else f"param{index}"
        if len(missing) != len(names):
            return Finding(f"{name} requires grad but has received no gradient for {self.steps} steps", name)
        return Finding(  # backward passes ran, and reached none of them
            f"no parameter of optimizer {step.record.optimizer} has received a gradient for {self.steps} steps"
            f" (first: {name}), though backward passes ran: it may hold the parameters of a model"
            " the loop no longer uses (built before the model was built again)",
            name,
        )


class NotInOptimizer(FactRule):
    """Gradients on a parameter no optimizer holds, where the optimizer holds a stale
    copy of the model (a layer replaced after it was built) or the parameter's siblings,
    or where the parameter was frozen at an earlier detail step (unfrozen, never added),
    or where the optimizer holds only frozen parameters (built before the model was
    frozen and given adapters, as LoRA does).

    A model trained only in part, with the rest left requiring grad (an optimizer
    given the head alone), gets gradients everywhere from the start: no mistake."""

    id = "not-in-optimizer"
    severity = WARNING
    summary = (
        "a parameter gets gradients no optimizer applies"
        " (a layer replaced or unfrozen, or adapters added, after the optimizer was built)"
    )
    condition = """A parameter gets gradients while no optimizer holds it, and one of:

- optimizers hold its module's siblings (a layer replaced after the optimizer was
  built);
- it was frozen at an earlier detail step (unfrozen without `add_param_group`);
- the optimizer holds only frozen parameters (built before LoRA adapters were added,
  as with peft's `get_peft_model` after the optimizer)."""
    hint = (
        "build the optimizer after replacing layers or adding adapters,"
        " or add the parameter to it (optimizer.add_param_group)"
    )
    facts = (UnoptimizedGradient,)

    def check(self, fact: UnoptimizedGradient) -> Finding | None:
        if fact.was_frozen:
            return Finding(f"{fact.param} was unfrozen and receives gradients, but no optimizer holds it", fact.param)
        message = f"{fact.param} receives gradients but no optimizer holds it"
        if not fact.siblings_optimized():
            if fact.holds_only_frozen():
                message += f", and optimizer {fact.optimizer} holds only frozen parameters"
            elif not fact.holds_old_params():
                return None  # neither its siblings nor a stale copy of it are optimized
        return Finding(message, fact.param)


class ZeroUpdate(StepRule):
    id = "zero-update"
    severity = WARNING
    summary = "a param group with non-zero gradients has lr 0 for `--patience` steps"
    condition = "A param group with non-zero gradients has lr 0 for `--patience` steps (default 20)."
    hint = (
        "check the learning rate and the parameter groups: the parameters are not moving"
        " (held at lr 0 on purpose? freeze them with requires_grad_(False), or pass --disable zero-update)"
    )

    def __init__(self, thresholds: Thresholds) -> None:
        super().__init__(thresholds)
        self.streak = 0

    def check(self, step: StepFinished) -> Finding | None:
        record = step.record
        frozen = 0.0 in record.lr and any(
            lr == 0.0 and norm is not None and norm > 0.0 for lr, norm in zip(record.lr, record.group_grad_norms)
        )
        self.streak = self.streak + 1 if frozen else 0
        if self.streak < self.thresholds.patience:
            return None
        group = next(i for i, (lr, n) in enumerate(zip(record.lr, record.group_grad_norms)) if lr == 0.0 and n)
        return Finding(f"param group {group} has lr 0 with non-zero gradients for {self.streak} steps")


RULES = (UnusedParam, NotInOptimizer, ZeroUpdate)
"""This family's rules, in the order the README lists them."""

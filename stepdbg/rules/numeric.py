"""The numeric rules: gradients that are not finite, that explode, or that vanish.

Judged from each finished step of one optimizer, with the norms the step already
computed (no tensor is read again, but for the first non-finite gradient's name).
"""

from __future__ import annotations

import math

from ..facts import StepFinished
from .base import ERROR, INFO, WARNING, Finding, StepRule, Thresholds


def _loss_bad(step: StepFinished) -> bool:
    loss = step.record.loss
    return loss is not None and not math.isfinite(loss)


def _norm_bad(step: StepFinished) -> bool:
    norm = step.record.grad_norm
    return norm is not None and not math.isfinite(norm)


class Nonfinite(StepRule):
    id = "nonfinite"
    severity = ERROR
    summary = "a gradient is NaN or Inf"
    condition = (
        "A gradient the step used is NaN or Inf. The message names the first parameter whose gradient is not finite."
    )
    hint = "lower the learning rate, clip gradients, or look for log(0), division by zero or fp16 overflow"
    nonfinite = True

    def __init__(self, thresholds: Thresholds) -> None:
        super().__init__(thresholds)
        self.named = False
        """The culprit was looked for (once: it reads every gradient)."""

    def check(self, step: StepFinished) -> Finding | None:
        if not _norm_bad(step):
            return None
        record = step.record
        param = None if self.named else step.culprit()
        self.named = True
        what = f"loss is {record.loss}" if _loss_bad(step) else f"gradient norm is {record.grad_norm}"
        where = f", first in {param}'s gradient" if param else ""
        return Finding(f"{what} at step {record.step}{where}", param)


class NonfiniteLoss(StepRule):
    """A NaN/Inf loss whose gradients are all finite, or that reached none of the step's
    parameters, harms no step (a mean over an empty batch; another task's loss in a loop
    that alternates)."""

    id = "nonfinite-loss"
    severity = INFO
    summary = "the loss is NaN or Inf, while the gradients the step used are finite"
    condition = (
        "The loss is NaN or Inf but every gradient the step used is finite, or the loss reached none of the"
        " step's parameters. A mean over an empty batch (all labels ignored, an empty mask, DP-SGD's Poisson"
        " sampling) is NaN with zero gradients, and the step is harmless; in a loop that alternates tasks,"
        " another task's NaN loss reaches none of this step's parameters. Information only: `--strict` ignores it."
    )
    hint = (
        "a mean over an empty batch (every label ignored, an empty mask, an empty Poisson-sampled batch) "
        "is NaN with zero gradients; otherwise look for a NaN in a term of the loss that no parameter affects"
    )
    nonfinite = True

    def check(self, step: StepFinished) -> Finding | None:
        if not _loss_bad(step) or _norm_bad(step):
            return None
        record = step.record
        harmless = (
            "the gradients the step used are finite" if record.grad_norm is not None else "no gradient reached the step"
        )
        return Finding(f"loss is {record.loss} at step {record.step}, but {harmless}")


class ExplodingGrad(StepRule):
    """A norm far above the recent average of this optimizer's norms. Zero norms are no
    part of that history: a step whose loss is exactly zero (no reward, no margin
    violated, an empty mask) has no gradient scale, and the next real one is no jump."""

    id = "exploding-grad"
    severity = WARNING
    summary = "the gradient norm exceeds `--explode-ratio` (100) × its recent average"
    condition = (
        "The global gradient norm exceeds `--explode-ratio` (default 100) times its recent average, or 1e8"
        " whatever the history. The recent average is an exponential moving average (weight 0.1) of the"
        " optimizer's non-zero norms; the ratio test starts after 10 steps of history."
    )
    hint = "lower the learning rate or clip gradients (torch.nn.utils.clip_grad_norm_)"

    def __init__(self, thresholds: Thresholds) -> None:
        super().__init__(thresholds)
        self.average: float | None = None
        self.steps = 0

    def check(self, step: StepFinished) -> Finding | None:
        norm = step.record.grad_norm
        if norm is None or not math.isfinite(norm) or norm == 0.0:
            return None
        limits = self.thresholds
        average = self.average
        found = None
        if norm > limits.explode_absolute or (
            average is not None and self.steps >= limits.explode_warmup and norm > limits.explode_ratio * average
        ):
            recent = f" ({norm / average:.0f}× its recent average {average:.3g})" if average else ""
            found = Finding(f"gradient norm {norm:.3g} at step {step.record.step}{recent}")
        self.average = norm if average is None else 0.9 * average + 0.1 * norm
        self.steps += 1
        return found


class VanishingGrad(StepRule):
    """A layer whose gradient is many orders of magnitude below the largest layer's and
    that does not move either.

    Layers (a module's parameters together), not single parameters: a bias just before
    a BatchNorm gets a gradient that is zero but for rounding. And the update, where the
    step measured it: a branch scaled down at init (ReZero, LayerScale, zero-init
    residuals) gets tiny gradients by design, and Adam still moves it normally.
    """

    id = "vanishing-grad"
    severity = WARNING
    summary = "a layer's gradient and update stay below `--vanish-ratio` (1e-6) × the largest layer's"
    condition = (
        "On 3 detail steps in a row (see `--every`), a layer's gradient (its parameters' together) is below"
        " `--vanish-ratio` (default 1e-6) times the largest layer's, and, where the step measured updates, so"
        " is its update: the layer neither learns nor moves."
    )
    hint = (
        "check the activations and initialization of the layers before it;"
        " consider normalization or residual connections"
    )
    detail = True

    def __init__(self, thresholds: Thresholds) -> None:
        super().__init__(thresholds)
        self.streak = 0

    def check(self, step: StepFinished) -> Finding | None:
        ratios = step.record.param_update_ratios or {}
        squares: dict[str, float] = {}
        moved: dict[str, float] = {}  # a layer's largest per-parameter update ratio
        first_param: dict[str, str] = {}
        for name, norm in zip(step.names, step.param_norms or ()):
            if norm is not None and math.isfinite(norm):
                layer = name.rpartition(".")[0] or name
                squares[layer] = squares.get(layer, 0.0) + norm * norm
                first_param.setdefault(layer, name)
                update = ratios.get(name)
                if update is not None and math.isfinite(update):
                    moved[layer] = max(moved.get(layer, 0.0), update)
        present = [(math.sqrt(square), layer) for layer, square in squares.items() if square > 0.0]
        if len(present) < 2:
            return None
        limit = self.thresholds.vanish_ratio
        largest = max(norm for norm, _ in present)
        largest_move = max(moved.values(), default=0.0)
        starved = [
            (norm, layer)
            for norm, layer in present
            if norm < limit * largest and not (largest_move and moved.get(layer, 0.0) >= limit * largest_move)
        ]
        self.streak = self.streak + 1 if starved else 0
        if self.streak < self.thresholds.vanish_detail_steps:
            return None
        smallest, layer = min(starved)
        message = f"layer {layer} gets gradients {largest / smallest:.1e}× smaller than the largest layer's"
        return Finding(message, first_param[layer])


RULES = (Nonfinite, NonfiniteLoss, ExplodingGrad, VanishingGrad)
"""This family's rules, in the order the README lists them."""

"""What a step finds of what happened to its optimizer's gradients since its previous step:
the facts the ordering rules judge (`stepdbg.facts`).

A plain step (a backward since the previous one, no clear after it, no gradient
consumed twice) costs a few attribute reads here and makes no fact; the stack and
the gradients' values are looked at only where a fact is about to be stated.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from .. import norms
from ..facts import AccumulatedOnConsumed, AccumulationCleared, ClearedBeforeStep, ConsumedAgain, GradientsGone
from .gradients import GradientWatch
from .optimizers import OptimizerRegistry, OptimizerTrack
from .schedulers import SchedulerWatch
from .stack import shadowing_a_join

if TYPE_CHECKING:
    from .progress import StepInProgress


class StepOrder:
    """States the ordering facts of each step."""

    def __init__(self, gradients: GradientWatch, optimizers: OptimizerRegistry, schedulers: SchedulerWatch) -> None:
        self._gradients = gradients
        self._optimizers = optimizers
        self._schedulers = schedulers

    def check(self, progress: StepInProgress, optimizer: Any) -> None:
        """As a step (not one GradScaler skipped) begins: what it finds since the previous one."""
        track = progress.track
        state = track.state
        step = progress.record.step
        count = self._gradients.backward_count
        no_backward = count == 0 or count <= state.last_step_backward
        if state.scheduler_ahead is not None:
            self._schedulers.step_came(track, step)
        if track.closure:
            pass  # the closure runs backward inside the step
        elif no_backward and self._fresh_gradients(track, optimizer):
            pass  # no backward, but gradients the previous step did not have (or some stepdbg does not read)
        elif no_backward and shadowing_a_join():
            pass  # a rank out of inputs, stepping as Join's hooks do while the others finish
        elif no_backward:
            if state.last_step_backward < 0:
                state.step_before_backward = True
            progress.add_fact(ConsumedAgain(track.index, step))
        elif state.clear_after_backward and state.mark == count and not self._set_since_clear(track, optimizer):
            progress.add_fact(ClearedBeforeStep(track.index, step, state.step_before_backward))
        if state.discarded or state.discard_streak:
            self._check_discarded(progress, no_backward)
        if not track.closure:
            check_accumulated(progress)

    def found_no_gradients(self, progress: StepInProgress) -> None:
        """The step (without a closure) finds no gradient at all. If a backward reached these
        parameters since they last started accumulating, something cleared them since, in a
        way no call showed (``p.grad = None``): taken as a clear, unless the step already has a
        fact of its own. If no backward ever did (an alternating multi-task loop steps every
        optimizer), the step is a no-op, and no fact: `unused-param` names parameters that
        stay without gradients."""
        track = progress.track
        state = track.state
        if not progress.facts and not track.closure and state.filled_at > state.mark:
            state.mark = self._gradients.backward_count
            progress.add_fact(GradientsGone(track.index, progress.record.step))

    def _fresh_gradients(self, track: OptimizerTrack, optimizer: Any) -> bool:
        """Whether a step with no backward since its previous one finds gradients that step did
        not consume (set by hand: ``p.grad = g`` from ``torch.func`` or ``autograd.grad``), or
        some that stepdbg does not read (see `ParamLayout.partial`)."""
        layout = self._optimizers.layout(track, optimizer)
        return layout.partial or _grads_set_by_hand(track, layout.params)

    def _check_discarded(self, progress: StepInProgress, no_backward: bool) -> None:
        """zero_grad inside a gradient-accumulation loop: the step uses only the backward
        passes after the last clear, no more than it threw away, with at least two clears
        throwing some away, step after step. Gradients set by hand after the last backward
        (gradient surgery: PCGrad) are no such step."""
        track = progress.track
        state = track.state
        discarded, state.discarded = state.discarded, 0
        clears, state.discarding_clears = state.discarding_clears, 0
        after = state.grad_after_discard() if state.grad_after_discard is not None else None
        state.grad_after_discard = None
        sentinel = track.sentinel_param()
        kept = self._gradients.backward_count - state.mark
        if (
            clears < 2
            or kept > discarded  # leftovers of an accumulation cleared at an epoch's start
            or no_backward
            or track.closure
            or kept <= 0
            or after is None
            or sentinel is None
            or sentinel.grad is not after
        ):
            state.discard_streak = 0
            return
        state.discard_streak += 1
        progress.add_fact(AccumulationCleared(track.index, progress.record.step, kept, discarded, state.discard_streak))

    def _set_since_clear(self, track: OptimizerTrack, optimizer: Any) -> bool:
        """Whether, with no backward since the last clear, the step finds gradients that hold
        values: set by hand (Reptile's meta-gradient, for all parameters or some), as a clear
        leaves None or zeros, and work in place on them (clipping, unscaling) keeps zeros.
        Asked only where a clear came after the last backward; values are read on the CPU only.
        On a device: gradients back where the clear left the sentinel none, or another
        tensor there. An optimizer holding tensors stepdbg does not read has nothing to judge."""
        layout = self._optimizers.layout(track, optimizer)
        if layout.partial:
            return True
        grads = [grad for param in layout.params if (grad := param.grad) is not None]
        if not grads:
            return False
        if all(grad.device.type == "cpu" for grad in grads):
            return any(norms.holding_values(grads))
        sentinel = track.sentinel_param()
        grad = sentinel.grad if sentinel is not None else None
        cleared = track.state.cleared_grad
        return grad is not None and (cleared is None or cleared() is not grad)


def check_accumulated(progress: StepInProgress) -> None:
    """A backward added to gradients a previous step had consumed. Looked at as the step
    starts, or as it ends where a closure runs backward passes inside it (LBFGS evaluating a
    closure that never clears); where only values still on a device can tell, once they are
    read back (`accumulated_on_device`)."""
    state = progress.track.state
    if state.dirty_param is not None:
        accumulated_on_consumed(progress, state.dirty_param)
    elif state.dirty_pending:
        progress.dirty_pending = list(state.dirty_pending.items())


def accumulated_on_device(progress: StepInProgress, values: list[float]) -> None:
    """The largest magnitudes of `StepInProgress.dirty_pending`, read back: the first gradient
    that still held values when a backward added to it was accumulated on, not cleared."""
    held = (position for (position, _), value in zip(progress.dirty_pending, values) if value != 0)
    if (position := next(held, None)) is not None:
        accumulated_on_consumed(progress, position)


def accumulated_on_consumed(progress: StepInProgress, position: int) -> None:
    names = progress.track.names
    name = names[position] if position < len(names) else None
    progress.add_fact(AccumulatedOnConsumed(progress.track.index, progress.record.step, name))


def _grads_set_by_hand(track: OptimizerTrack, params: list[torch.Tensor]) -> bool:
    """Whether a step with no backward since its previous one finds gradients that step
    did not consume (see `GradientState.consumed`)."""
    consumed = track.state.consumed
    if consumed is None:
        return any(p.grad is not None for p in params)
    position, tensor, version = consumed
    grad = params[position].grad if position < len(params) else None
    if grad is None:
        return False
    written_since = grad._version != version
    return written_since or tensor() is not grad

"""Loss bookkeeping: the loss of each backward pass, held until the step that consumes its
gradients takes it, and the sum a step record shows.

A step takes the losses of the backward passes since its optimizer's gradients last
started accumulating, but for those that did not reach it (another model's loss).
"""

from __future__ import annotations

import bisect
import math
import operator
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from .optimizers import OptimizerTrack
    from .progress import StepInProgress

HELD_LOSSES = 1 << 12
"""At most this many losses wait for the step that consumes them. An optimizer idle for longer
(a second phase's, built at the start) finds its first step's loss unknown, rather than every
loss of the run kept for it (memory, on CUDA device memory, and time per step)."""

LOSS_PRUNE_EVERY = 64
"""Losses already taken by every optimizer are looked for once this many are held."""


class LossBook:
    """The losses of the backward passes that not every optimizer has taken yet."""

    def __init__(self) -> None:
        self.held: list[tuple[int, Any]] = []
        """(backward count, loss) of the backward passes not yet consumed by every optimizer."""
        self._dropped_through = 0
        """Backward count of the last loss dropped to keep `held` within `HELD_LOSSES`."""
        self._prune_at = LOSS_PRUNE_EVERY
        """`held`'s length at which `_prune` looks again."""
        self.on_device = False
        """Some loss was a device tensor: steps look for one among theirs."""

    def add(self, count: int, loss: Any, tracks: list[OptimizerTrack]) -> None:
        """The loss of backward pass ``count`` (None: not a scalar stepdbg can read)."""
        self.held.append((count, loss))
        if len(self.held) >= self._prune_at:
            self._prune(min((t.state.mark for t in tracks), default=count))

    def _prune(self, oldest: int) -> None:
        """Drop the losses every optimizer has taken (``oldest``: the earliest mark); when an
        idle one keeps them, the oldest. Called as the list doubles, so that many optimizers
        cost no more per step than one."""
        losses = self.held
        if losses[0][0] <= oldest:
            del losses[: bisect.bisect_right(losses, oldest, key=_backward_index)]
        if len(losses) >= HELD_LOSSES:
            drop = len(losses) - HELD_LOSSES // 2
            self._dropped_through = losses[drop - 1][0]
            del losses[:drop]
        self._prune_at = min(max(LOSS_PRUNE_EVERY, 2 * len(losses)), HELD_LOSSES)

    def take(self, progress: StepInProgress, count: int) -> None:
        """The backward passes (and their losses) that filled the gradients this step consumes;
        ``count``: the global backward count now."""
        state = progress.track.state
        mark = state.mark
        losses = self.held
        if (
            count == mark + 1
            and not state.missed
            and losses
            and losses[-1][0] == count
            and self._dropped_through <= mark
        ):
            progress.backward_ran = True  # one backward since the mark, which reached it: the common step
            progress.record.backward_calls = 1
            progress.losses = [losses[-1][1]]
            return
        missed = []
        if state.missed:
            missed = [(max(first, mark + 1), last) for first, last in state.missed if last > mark]
            state.missed = []
        progress.backward_ran = count > mark
        progress.record.backward_calls = count - mark - (_count_through(missed, count) if missed else 0)
        start = bisect.bisect_right(losses, mark, key=_backward_index) if losses and losses[0][0] <= mark else 0
        if missed:
            progress.losses = [value for index, value in losses[start:] if not _within(index, missed)]
        else:
            progress.losses = [value for _, value in losses[start:]]
        dropped = self._dropped_through
        if mark < dropped and dropped - mark > _count_through(missed, dropped):
            progress.losses.append(None)  # some of its losses were dropped: the sum is unknown

    def take_all(self) -> list[Any]:
        """Every loss held (a loop without an optimizer: each backward is its own iteration)."""
        losses = [value for _, value in self.held]
        self.held = []
        return losses


def note_missed(runs: list[list[int]], count: int) -> None:
    """Backward pass ``count`` did not reach an optimizer: add it to its ``runs`` (``[first, last]``)."""
    if runs and runs[-1][1] == count - 1:
        runs[-1][1] = count
    else:
        runs.append([count, count])
        if len(runs) > HELD_LOSSES:  # reached and missed in turn, for ever: keep it bounded
            del runs[: HELD_LOSSES // 2]


def loss_value(outputs: Sequence[Any]) -> Any:
    """The backpropagated scalar (a float on CPU, a detached 0-d tensor on a device), or None."""
    if not isinstance(outputs, (tuple, list)):
        return None  # an iterable we must not consume
    if len(outputs) != 1:
        values = [loss_value([o]) for o in outputs]
        if any(v is None for v in values) or not values:
            return None
        if all(isinstance(v, float) for v in values):
            return math.fsum(values)
        return None
    output = outputs[0]
    if not isinstance(output, torch.Tensor) or output.numel() != 1:
        return None
    if output.is_cpu:
        return output.item()
    if output.is_cuda:
        return output.detach().reshape(()).float()
    return None


def sum_losses(pieces: list[Any], tensor_values: list[float], divisor: float) -> float | None:
    """A step's loss: its backward passes' losses (``tensor_values``: those read back from a
    device, in order) summed, divided by the GradScaler's scale; None if one is unknown."""
    if len(pieces) == 1 and type(pieces[0]) is float:
        return pieces[0] / divisor
    if not pieces or any(p is None for p in pieces):
        return None
    values = iter(tensor_values)
    total = math.fsum(next(values) if isinstance(p, torch.Tensor) else p for p in pieces)
    return total / divisor


def _count_through(runs: list[tuple[int, int]], through: int) -> int:
    """How many indices of ``runs`` (``(first, last)``) are at most ``through``."""
    return sum(min(last, through) - first + 1 for first, last in runs if first <= through)


def _within(index: int, runs: list[tuple[int, int]]) -> bool:
    """Whether ``index`` lies in one of ``runs`` (``(first, last)``, in order)."""
    at = bisect.bisect_right(runs, index, key=operator.itemgetter(0)) - 1
    return at >= 0 and index <= runs[at][1]


_backward_index = operator.itemgetter(0)
"""A held loss's backward count (a C function: bisect calls it at every step)."""

"""A step record being built (`StepInProgress`), with the values it waits for."""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from ..device_clock import DevicePhases
from ..schema import StepRecord

if TYPE_CHECKING:
    from .beside import PendingNorms
    from .optimizers import OptimizerTrack

_EMPTY: tuple = ()
"""Shared default for the fields of a step in progress that most steps never fill."""


@dataclass(slots=True)
class StepInProgress:
    """A step record being built, with the values it waits for."""

    record: StepRecord
    track: OptimizerTrack
    detail: bool
    params: list[torch.Tensor] = _EMPTY  # type: ignore[assignment]
    present: list[int] = _EMPTY  # type: ignore[assignment]
    missing: list[int] = _EMPTY  # type: ignore[assignment]
    grad_pieces: list[torch.Tensor] = _EMPTY  # type: ignore[assignment]
    piece_counts: list[int] = _EMPTY  # type: ignore[assignment]
    before: list[torch.Tensor] | None = None
    update_pieces: list[torch.Tensor] = _EMPTY  # type: ignore[assignment]
    losses: list[Any] = _EMPTY  # type: ignore[assignment]
    backward_ran: bool = False
    """Backward passes ran since the optimizer's previous step, whether or not they reached it."""
    captured: bool = False
    """The step is being captured into a CUDA graph: no value exists yet, none is read."""
    loss_scale: Any = None
    grad_scale: Any = None
    on_device: bool = False
    """Some value is still on a device (CUDA): read back later, without a sync (see `waits_on_device`)."""
    device_phases: DevicePhases | None = None
    """On CUDA: the iteration's events, for phase times from the device's clock."""
    data_startup: bool = False
    """Its data wait includes a loader's first workers starting (see `DataWaits.startup`)."""
    facts: list[object] | None = None
    """What it found of the gradient state, for the ordering rules (judged as its record completes)."""
    dirty_pending: list[tuple[int, torch.Tensor]] = _EMPTY  # type: ignore[assignment]
    """See `GradientState.dirty_pending`: read back with the step's values, judged as it completes."""
    inside: bool = False
    """A step without a closure argument ran backward passes itself (see `Stepping.end`)."""
    filled_inside: weakref.ref | None = None
    """The optimizer's first trainable gradient as the last of those passes left it."""
    beside: PendingNorms | None = None
    """Its gradients' norms, being taken on a helper thread while it runs (see `beside`)."""

    def add_fact(self, fact: object) -> None:
        if self.facts is None:
            self.facts = []
        self.facts.append(fact)

    def waits_on_device(self, device_losses: bool) -> bool:
        """Whether a norm, a GradScaler scale or (where ``device_losses``) a loss is a CUDA tensor."""
        pieces = self.grad_pieces or self.update_pieces
        if pieces and (pieces[0].is_cuda if len(pieces) == 1 else any(p.is_cuda for p in pieces)):
            return True
        if isinstance(self.loss_scale, torch.Tensor) or isinstance(self.grad_scale, torch.Tensor):
            return True
        if self.dirty_pending and any(value.is_cuda for _, value in self.dirty_pending):
            return True
        return device_losses and any(isinstance(v, torch.Tensor) for v in self.losses)

    def device_values(self) -> list[torch.Tensor]:
        """Every tensor to read back, in the order `split` expects."""
        values = self.grad_pieces + self.update_pieces if self.update_pieces else self.grad_pieces
        if self.dirty_pending:
            values = [*values, *(value for _, value in self.dirty_pending)]
        if not self.on_device:
            return values  # losses and scales are floats already
        scales = [s.reshape(()) for s in (self.loss_scale, self.grad_scale) if isinstance(s, torch.Tensor)]
        losses = [v for v in self.losses if isinstance(v, torch.Tensor)]
        return [*values, *losses, *scales]

    def split(self, values: list[float]) -> tuple[list[float], list[float], list[float], list[float], list[float]]:
        """Grad pieces, update pieces, `dirty_pending`'s values, loss values and scales, from
        `device_values` read back."""
        a = len(self.grad_pieces)
        b = a + len(self.update_pieces)
        c = b + len(self.dirty_pending)
        if not self.on_device:
            return values[:a], values[a:b], values[b:c], [], []
        d = c + sum(1 for v in self.losses if isinstance(v, torch.Tensor))
        return values[:a], values[a:b], values[b:c], values[c:d], values[d:]

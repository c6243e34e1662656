"""Loops without an optimizer (updates written by hand): each backward pass is one iteration,
recorded with the norm of the gradients of the leaf tensors it reaches.

Its norms and memory are taken as the backward ends; its record is finished at the next
instrumented call (or DataLoader fetch), unless an optimizer is built before then: that
optimizer owns the backward (Pyro builds its optimizers the first time it steps)."""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

import torch

from .. import device_clock, norms
from ..memory import MemoryGauge
from ..schema import StepRecord
from .losses import LossBook
from .optimizers import OptimizerTrack
from .progress import StepInProgress


class NoOptimizerLoop:
    """The iterations of a loop that has built no optimizer."""

    def __init__(self, losses: LossBook, memory: MemoryGauge) -> None:
        self._losses = losses
        self._memory = memory
        self.steps = 0
        self.track = OptimizerTrack(index=-1)
        """Stands for the missing optimizer."""
        self._leaves: list[weakref.ref] = []
        """The leaf tensors its backward reaches (found from the graph)."""
        self.unowned: tuple[StepInProgress, float] | None = None
        """The record of the last backward, and its end, until `take` (or an optimizer owns it)."""

    def backward_starting(self, outputs: Sequence[Any]) -> None:
        """Find the leaves a backward from ``outputs`` reaches, where none are known yet or one
        is gone (a loop that makes new tensors each iteration)."""
        if not self._leaves or any(ref() is None for ref in self._leaves):
            self._leaves = [weakref.ref(leaf) for leaf in _graph_leaves(outputs)]

    def backward_ended(self, end: float) -> None:
        """A backward pass ended at ``end``: its iteration's record, its norms taken now."""
        record = StepRecord(
            optimizer=None,
            step=0,
            t=0.0,
            calls=[],
            backward_calls=1,
            skipped=False,
            loss=None,
            grad_norm=None,
            group_grad_norms=[],
            lr=[],
            time={},
        )
        record.memory = self._memory.read()
        progress = StepInProgress(record=record, track=self.track, detail=False)
        grads = [grad for ref in self._leaves if (leaf := ref()) is not None and (grad := leaf.grad) is not None]
        if device_clock.capturing():  # see `StepInProgress.captured`
            progress.captured = True
        elif grads:
            with torch.no_grad():
                progress.grad_pieces, progress.piece_counts = norms.group_norm_pieces([grads])
        self.unowned = (progress, end)

    def take(self) -> tuple[StepInProgress, float]:
        """The record of the last backward, none having been built since, to finish: no
        instrumented call (nor DataLoader fetch) ran since either, so its calls, host times
        and memory are as they were when it ended (on CUDA, its device times end at this
        call's event)."""
        progress, end = self.unowned  # type: ignore[misc]
        self.unowned = None
        progress.record.step = self.steps
        self.steps += 1
        losses = self._losses.take_all()
        progress.losses = [] if progress.captured else losses
        return progress, end


def _graph_leaves(outputs: Sequence[Any]) -> list[torch.Tensor]:
    """The leaf tensors a backward from ``outputs`` accumulates into (parameters, or raw
    tensors with ``requires_grad``), from the autograd graph's AccumulateGrad nodes."""
    if not isinstance(outputs, (tuple, list)):
        return []
    pending: list[Any] = [t.grad_fn for t in outputs if isinstance(t, torch.Tensor) and t.grad_fn is not None]
    seen: dict[int, Any] = {}  # the nodes themselves: their Python wrappers keep their ids while held
    leaves: list[torch.Tensor] = []
    while pending:
        node = pending.pop()
        if node is None or id(node) in seen:
            continue
        seen[id(node)] = node
        leaf = getattr(node, "variable", None)
        if isinstance(leaf, torch.Tensor):
            leaves.append(leaf)
        else:
            pending.extend(child for child, _ in node.next_functions)
    return leaves

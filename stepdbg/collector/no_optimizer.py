"""Loops without an optimizer (updates written by hand): each backward pass is one iteration,
recorded with the norm of the gradients of the leaf tensors it reaches."""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

import torch

from .. import norms
from ..device_clock import capturing
from ..schema import StepRecord
from .losses import LossBook
from .optimizers import OptimizerTrack
from .progress import StepInProgress


class NoOptimizerLoop:
    """The iterations of a loop that has built no optimizer."""

    def __init__(self, losses: LossBook) -> None:
        self._losses = losses
        self.steps = 0
        self.track = OptimizerTrack(index=-1)
        """Stands for the missing optimizer."""
        self._leaves: list[weakref.ref] = []
        """The leaf tensors its backward reaches (found from the graph)."""

    def backward_starting(self, outputs: Sequence[Any]) -> None:
        """Find the leaves a backward from ``outputs`` reaches, where none are known yet or one
        is gone (a loop that makes new tensors each iteration)."""
        if not self._leaves or any(ref() is None for ref in self._leaves):
            self._leaves = [weakref.ref(leaf) for leaf in _graph_leaves(outputs)]

    def step(self) -> StepInProgress:
        """A backward pass ended: its iteration's record, to finish."""
        record = StepRecord(
            optimizer=None, step=self.steps, t=0.0, calls=[], backward_calls=1,
            skipped=False, loss=None, grad_norm=None, group_grad_norms=[], lr=[], time={},
        )
        self.steps += 1
        progress = StepInProgress(record=record, track=self.track, detail=False)
        progress.losses = self._losses.take_all()
        grads = [grad for ref in self._leaves if (leaf := ref()) is not None and (grad := leaf.grad) is not None]
        if capturing():  # see `StepInProgress.captured`
            progress.captured = True
            progress.losses = []
        elif grads:
            with torch.no_grad():
                progress.grad_pieces, progress.piece_counts = norms.group_norm_pieces([grads])
        return progress


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

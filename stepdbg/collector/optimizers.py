"""Which optimizers the loop has: a track for each, the parameters each holds (and their
names, announced to the trace), found by the optimizer or, through any wrapper, by its
parameters; forgotten with the optimizer."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from ..module_tree import ModuleTree
from ..schema import OptimizerInfo, ParamGroupInfo
from .gradients import GradientState
from .layout import ParamLayout, gradient_holders, params_of
from .phases import StepTimer

if TYPE_CHECKING:
    from .progress import StepInProgress


@dataclass(eq=False)
class OptimizerTrack:
    """What stepdbg knows about one optimizer (the inner one, whatever wraps it)."""

    index: int
    state: GradientState = field(default_factory=GradientState)
    steps: int = 0
    """Steps made so far (a step that raised is not one)."""
    param_ids: set[int] = field(default_factory=set)
    """Ids of the parameters its optimizer holds, as last seen."""
    sharing: list[OptimizerTrack] = field(default_factory=list)
    """Other optimizers holding some of the same parameters (SAM and the optimizer inside it):
    clearing through one clears the other's gradients too."""
    sentinel: weakref.ref | None = None
    """A trainable parameter, looked at after each backward: did the backward reach this optimizer?"""
    last_sentinel: weakref.ref | None = None
    """The last trainable parameter: a backward that changes neither its gradient nor the
    sentinel's did not reach this optimizer (another model's loss, ``backward(inputs=...)``)."""
    info: OptimizerInfo | None = None
    names: list[str] = field(default_factory=list)
    """Qualified names of the parameters, in the optimizer's order (once announced)."""
    layout: ParamLayout | None = None
    """Cached only for an optimizer that can be watched for collection, and dropped with it."""
    # the step in progress
    depth: int = 0
    """Nested calls of its ``step`` running (a subclass's step calling ``super().step()``)."""
    closure: bool = False
    pending: StepInProgress | None = None
    timer: StepTimer = field(default_factory=StepTimer)
    stepping_id: int = 0
    """``id`` of the optimizer whose step is running (no reference): found on the stack, or gone."""

    def sentinel_param(self) -> torch.Tensor | None:
        return self.sentinel() if self.sentinel is not None else None


class OptimizerRegistry:
    """The tracks of the optimizers alive, by optimizer and by parameter."""

    def __init__(
        self,
        tree: ModuleTree,
        emit_optimizer: Callable[[OptimizerInfo], None],
        forget: Callable[[OptimizerTrack], None],
    ) -> None:
        self.tree = tree
        self._emit_optimizer = emit_optimizer
        self._forget = forget
        """Told when an optimizer is gone, so that nothing else keeps its track."""
        self.created = 0
        self.tracks: list[OptimizerTrack] = []
        self.by_param: dict[int, OptimizerTrack] = {}
        self.by_optimizer: dict[int, OptimizerTrack] = {}
        """By ``id`` of the optimizer object, while it lives (wrappers are found by their parameters:
        see `Collector.track_for`)."""

    def add(self, optimizer: Any) -> OptimizerTrack:
        """A new optimizer: its track, numbered in creation order."""
        track = OptimizerTrack(index=self.created)
        self.created += 1
        self.tracks.append(track)
        self.hold(track, params_of(optimizer))
        try:
            weakref.finalize(optimizer, self._forget_optimizer, id(optimizer), track)
        except TypeError:
            return track  # no weak references: found by its parameters, its layout rebuilt at each step
        self.by_optimizer[id(optimizer)] = track
        return track

    def _forget_optimizer(self, key: int, track: OptimizerTrack) -> None:
        """The optimizer is gone: its id may be reused, its cached layout must not keep its
        parameters alive, and its track goes (a loop that builds an optimizer each iteration
        would otherwise make every backward slower than the last).

        Called by a weakref finalizer, possibly while a hook walks these lists: each is
        replaced, never changed in place (the dicts are only ever looked up).
        """
        if self.by_optimizer.get(key) is track:
            del self.by_optimizer[key]
        track.layout = None
        self.tracks = [t for t in self.tracks if t is not track]
        self._forget(track)
        for other in track.sharing:
            other.sharing = [t for t in other.sharing if t is not track]
        for param_id in track.param_ids:
            if self.by_param.get(param_id) is track:
                heir = next((t for t in track.sharing if param_id in t.param_ids), None)
                if heir is None:
                    del self.by_param[param_id]
                else:  # another optimizer still holds it (SAM's inner one)
                    self.by_param[param_id] = heir

    def hold(self, track: OptimizerTrack, params: list[torch.Tensor]) -> None:
        """``track``'s optimizer holds ``params`` (at creation, and again when its groups change)."""
        ids = {id(p) for p in params}
        for stale in track.param_ids - ids:
            if self.by_param.get(stale) is track:
                del self.by_param[stale]
        for param in params:
            other = self.by_param.get(id(param))
            if other is not None and other is not track and other not in track.sharing:
                track.sharing.append(other)
                other.sharing.append(track)
            self.by_param[id(param)] = track
        track.param_ids = ids
        sentinel = track.sentinel_param()
        if sentinel is None or id(sentinel) not in ids:
            trainable = next((p for p in params if p.requires_grad), None)
            track.sentinel = weakref.ref(trainable) if trainable is not None else None
        last = next((p for p in reversed(params) if p.requires_grad), None)
        track.last_sentinel = weakref.ref(last) if last is not None else None

    def layout(self, track: OptimizerTrack, optimizer: Any) -> ParamLayout:
        """The optimizer's parameters as a step reads them: cached, made again when its groups change."""
        previous = track.layout
        if previous is None or not previous.matches(optimizer):
            track.layout = None
            layout = ParamLayout.of(optimizer)
            # add_param_group (before the first step, or later: progressive unfreezing), a parameter swapped in
            if previous is not None or set(map(id, layout.params)) != track.param_ids:
                self.hold(track, layout.params)
            if previous is not None and track.info is not None:
                self.announce(track, optimizer)  # the trace gets the new groups and their names
            if self.by_optimizer.get(id(optimizer)) is track:  # `_forget_optimizer` will drop it
                track.layout = layout
            return layout
        return previous

    def announce(self, track: OptimizerTrack, optimizer: torch.optim.Optimizer) -> None:
        """Write the optimizer's record: its class, its groups and their parameters' names."""
        held = params_of(optimizer)
        names = self.tree.names(held)
        groups = []
        position = 0
        for group in optimizer.param_groups:
            params = gradient_holders(group["params"])
            groups.append(
                ParamGroupInfo(params=names[position : position + len(params)], numel=sum(p.numel() for p in params))
            )
            position += len(params)
        inner = getattr(optimizer, "optimizer", None) or getattr(optimizer, "_optimizer", None)
        cls = type(inner if isinstance(inner, torch.optim.Optimizer) else optimizer).__name__
        track.names = names
        ddp = bool(held) and self.tree.wrapped_in(held[0], torch.nn.parallel.DistributedDataParallel)
        track.info = OptimizerInfo(optimizer=track.index, cls=cls, groups=groups, ddp=ddp)
        self._emit_optimizer(track.info)

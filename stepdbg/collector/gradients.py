"""What the loop does to each optimizer's gradients: what a step consumed, what a backward
filled, what was cleared since, and when.

State, not calls: at a step the consumed gradient tensors are remembered weakly with
their ``_version``. Any clearing (``set_to_none``, ``p.grad = None``, ``zero_()``)
changes one of the two, but for a write through ``.data``, which moves no version and
shows only in the values. A backward that bumps the version of a still-consumed
gradient has accumulated into stale gradients. That snapshot is only taken for
optimizers that were not cleared by an explicit ``zero_grad`` call in their last
iteration, so a correct loop pays nothing for it. What a step makes of this state
(the facts the ordering rules judge) is `step_order`'s. See docs/gradient-state.md.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import torch

from .. import device_clock, norms
from .losses import note_missed

if TYPE_CHECKING:
    from .optimizers import OptimizerRegistry, OptimizerTrack

ConsumedGradient = tuple[weakref.ref, weakref.ref, int, int]
"""A gradient a step consumed, as a snapshot keeps it: (parameter, gradient, the gradient's
version then, the parameter's position in the optimizer), both tensors held weakly (a held
gradient would make the next backward add out of place)."""

Snapshot = list[ConsumedGradient]


@dataclass(eq=False)
class GradientState:
    """One optimizer's gradients since its previous step. Read at every clear, backward and
    step: one record, so that the hot path reaches all of it through one attribute."""

    last_step_backward: int = -1
    """Global backward count at this optimizer's previous step; -1 before its first."""
    mark: int = 0
    """Global backward count when its gradients last started accumulating (clear or step)."""
    cleared_since_step: bool = False
    clear_after_backward: bool = False
    filled_at: int = -1
    """The last backward after which the sentinel had a gradient."""
    reach_before: tuple[Any, Any] = (None, None)
    """Both sentinels' gradients (id and version, no reference) as the current backward began."""
    missed: list[list[int]] = field(default_factory=list)
    """Runs ``[first, last]`` of backward passes that did not reach it: not among its step's.
    Runs, so that an optimizer idle while another trains holds one entry, not one a step."""
    step_before_backward: bool = False
    """Its first step came with no backward before it (a loop that steps before backward)."""
    param_version: int | None = None
    """The sentinel's version as its previous step left it: a clear finding it unchanged comes
    before the parameters were touched, so it throws away what backward passes since computed."""
    scheduler_ahead: tuple[str, int] | None = None
    """A scheduler of its stepped over gradients waiting for it: its class, and the global
    backward count then (see `SchedulerWatch.check_order`)."""
    backward_at_step_end: int = 0
    """The global backward count as its previous step ended (passes inside a step are its own)."""
    discarded: int = 0
    """Backward passes since the previous step cleared unused, the parameters untouched in
    between (the only optimizer: with several, another one's step may have used them)."""
    discarding_clears: int = 0
    """How many clears threw those away: one a step is an adversarial attack's backward passes
    (for the input's gradient) cleared before the training one, not an accumulation loop."""
    discard_streak: int = 0
    grad_after_discard: weakref.ref | None = None
    """The sentinel's gradient after the last backward since a discard: a step that finds
    another tensor there steps on gradients set by hand (gradient surgery), not on the backward's."""
    cleared_grad: weakref.ref | None = None
    """The sentinel's gradient right after the last clear (None: it had none): see
    `StepOrder.set_since_clear`."""
    snapshot: Snapshot | None = None
    """The gradients its previous step consumed, while a backward may still add to them."""
    dirty_param: int | None = None
    """The first position where a backward added to gradients its previous step consumed."""
    dirty_pending: dict[int, torch.Tensor] | None = None
    """Positions where a backward added to a consumed gradient that looked untouched, by
    position: its largest magnitude as that backward began, still on a CUDA device. Non-zero:
    it held the consumed values (missing-zero-grad); zero: it had been cleared through ``.data``.
    The step decides once they are read back with its values (`StepInProgress.dirty_pending`)."""
    consumed: tuple[int, weakref.ref, int] | None = None
    """One gradient its previous step consumed: (position, the tensor held weakly, its version).
    A step with no backward since compares it with what it finds: the same tensor, unchanged,
    is stale (step twice, step before backward); another tensor, or one written since, was set
    by hand (``p.grad = g`` from ``torch.func`` or ``autograd.grad``): fresh gradients."""


class GradientWatch:
    """Keeps every optimizer's `GradientState` as clears, backward passes and steps happen."""

    def __init__(self, optimizers: OptimizerRegistry) -> None:
        self.optimizers = optimizers
        self.backward_count = 0
        """Backward passes that accumulate, counted as each starts: the clock of gradient state."""
        self._watched: list[OptimizerTrack] = []
        """Optimizers whose snapshot of consumed gradients is watched."""
        self._stale: list[tuple[OptimizerTrack, Snapshot, int, bool | torch.Tensor]] = []
        """Consumed gradients the running backward may add to: the track, its snapshot, the
        index in it, and whether the gradient held values (see `_values_held`)."""

    def optimizer_added(self, track: OptimizerTrack) -> None:
        """Its gradients start from here (a model trained per fold, an inner loop's fresh
        optimizer), or from the last backward if it is built with gradients in place."""
        sentinel = track.sentinel_param()
        filled = sentinel is not None and sentinel.grad is not None and self.backward_count > 0
        track.state.mark = self.backward_count - 1 if filled else self.backward_count

    def forget(self, track: OptimizerTrack) -> None:
        """Its optimizer is gone (called by a finalizer: the list is replaced, never changed in place)."""
        self._watched = [t for t in self._watched if t is not track]

    # ---- clears -----------------------------------------------------------------------

    def cleared(self, track: OptimizerTrack) -> None:
        """All of ``track``'s gradients were cleared by an explicit call."""
        state = track.state
        state.cleared_since_step = True
        since = max(state.last_step_backward, state.mark)
        state.clear_after_backward = self.backward_count > since
        sentinel = track.sentinel_param()
        unused = self.backward_count - max(since, state.backward_at_step_end)
        if (
            unused > 0
            and state.param_version is not None
            and len(self.optimizers.tracks) == 1
            and sentinel is not None
            and sentinel._version == state.param_version
        ):
            state.discarded += unused
            state.discarding_clears += 1
        state.mark = self.backward_count
        state.snapshot = None
        state.dirty_param = None
        state.dirty_pending = None
        grad = sentinel.grad if sentinel is not None else None
        state.cleared_grad = weakref.ref(grad) if grad is not None else None
        if state.consumed is not None and (grad := state.consumed[1]()) is not None:
            # zeroed in place (set_to_none=False): cleared, not set by hand
            state.consumed = (state.consumed[0], state.consumed[1], grad._version)

    def cleared_params(self, params: list[torch.Tensor], besides: OptimizerTrack | None = None) -> None:
        """A module's gradients were cleared (or an optimizer's, ``besides``, that shares
        them): all of some optimizers', part of others'."""
        by_param = self.optimizers.by_param
        covered: dict[OptimizerTrack, set[int]] = {}
        for param in params:
            track = by_param.get(id(param))
            if track is not None:
                covered.setdefault(track, set()).add(id(param))
                for other in track.sharing:
                    if id(param) in other.param_ids:
                        covered.setdefault(other, set()).add(id(param))
        if besides is not None:
            covered.pop(besides, None)
        for track, ids in covered.items():
            state = track.state
            if len(ids) == len(track.param_ids):  # all of them: ``ids`` are among them
                self.cleared(track)
            elif state.snapshot is not None:
                state.snapshot = [e for e in state.snapshot if (p := e[0]()) is not None and id(p) not in ids]

    # ---- backward passes --------------------------------------------------------------

    def backward_starting(self) -> bool:
        """An outermost backward that accumulates begins: it is counted (as it starts: a step
        made inside it, an optimizer stepped from a post-accumulate-grad hook, consumes the
        gradients it is filling). Whether consumed gradients were found cleared without a call."""
        inferred_clear = self._check_cleared_since_step() if self._watched else False
        tracks = self.optimizers.tracks
        if len(tracks) > 1:  # which optimizers it reaches, where there is a choice (a few us)
            for track in tracks:
                track.state.reach_before = (_grad_state(track.sentinel), _grad_state(track.last_sentinel))
        self.backward_count += 1
        return inferred_clear

    def backward_ended(self) -> None:
        """An outermost backward that accumulates has ended: whom it reached, what it added to."""
        if self._stale:
            self._check_accumulated_into_stale()
        count = self.backward_count
        tracks = self.optimizers.tracks
        several = len(tracks) > 1
        for track in tracks:
            state = track.state
            sentinel = track.sentinel_param()
            if sentinel is not None and (grad := sentinel.grad) is not None:
                state.filled_at = count
                if state.discarded:
                    state.grad_after_discard = weakref.ref(grad)
            if (
                several
                and state.mark < count
                and state.reach_before == (_grad_state(track.sentinel), _grad_state(track.last_sentinel))
            ):  # not reached (and not consumed by a step inside it)
                note_missed(state.missed, count)

    def _check_cleared_since_step(self) -> bool:
        """Before a backward: which consumed gradients are still there, uncleared? Whether some
        were cleared without a call we saw (``p.grad = None``, ``zero_()``).

        A gradient that is another tensor now was cleared or set by hand (fresh gradients),
        unless, in a distributed run, it is a view that holds values: DDP with
        ``gradient_as_bucket_view`` moves the consumed gradients into new buckets at its
        second forward, and the view carries them on, watched in their place. Values are
        read on the CPU only (a read on a device would be a host sync): there, such a view
        counts as a clear, and the missing clear is reported a step later. The same tensor
        at the same version may still have been zeroed through ``.data`` (`_values_held`).
        """
        still_watched = []
        inferred_clear = False
        for track in self._watched:
            state = track.state
            if state.snapshot is None:
                continue
            untouched: Snapshot = []
            moved: list[tuple[Any, torch.Tensor, int]] = []
            for entry in state.snapshot:
                param_ref, grad_ref, version, position = entry
                param = param_ref()
                grad: torch.Tensor | None = param.grad if param is not None else None
                if grad is None:
                    continue
                if grad._version == version and grad_ref() is grad:
                    untouched.append(entry)
                elif grad_ref() is not grad and grad._is_view() and _distributed():
                    moved.append((param_ref, grad, position))
            kept: Snapshot = []
            for entry, held in zip(untouched, _values_held(state, untouched)):
                if held is not False:  # False: zeroed through .data, a clear like any other
                    self._stale.append((track, kept, len(kept), held))
                    kept.append(entry)
            if moved:
                held_values = norms.holding_values([grad for _, grad, _ in moved])
                for (param_ref, view, position), holds in zip(moved, held_values):
                    if holds:
                        self._stale.append((track, kept, len(kept), True))
                        kept.append((param_ref, weakref.ref(view), view._version, position))
            if len(kept) < len(state.snapshot) and not state.cleared_since_step:
                inferred_clear = True
                if not kept:
                    state.mark = self.backward_count
            state.snapshot = kept
            if kept:
                still_watched.append(track)
        self._watched = still_watched
        return inferred_clear

    def _check_accumulated_into_stale(self) -> None:
        """After a backward: did it add to gradients a step had already consumed?

        Such a gradient stays watched at its new version: the next backward's check then
        sees a clear only if one happens (a version moved by this backward is no clear)."""
        for track, snapshot, index, held in self._stale:
            param_ref, grad_ref, version, position = snapshot[index]
            grad = grad_ref()
            if grad is not None and grad._version != version:
                state = track.state
                if not isinstance(held, torch.Tensor):
                    if state.dirty_param is None:
                        state.dirty_param = position
                elif state.dirty_pending is None:
                    state.dirty_pending = {position: held}
                else:
                    state.dirty_pending.setdefault(position, held)
                if state.snapshot is snapshot:  # not replaced by a step inside the backward
                    snapshot[index] = (param_ref, grad_ref, grad._version, position)
        self._stale = []

    # ---- steps ------------------------------------------------------------------------

    def consumed(self, track: OptimizerTrack, params: list[torch.Tensor] | None = None) -> None:
        """The step consumed its gradients: what follows accumulates anew. ``params``: watch
        their gradients (an optimizer not cleared by a call in its last iteration)."""
        state = track.state
        state.last_step_backward = self.backward_count
        state.mark = self.backward_count
        state.clear_after_backward = False
        state.dirty_param = None
        state.dirty_pending = None
        state.cleared_since_step = False
        if params is None:
            state.snapshot = None
            return
        entries = []
        for position, param in enumerate(params):
            grad = param.grad
            if grad is not None:
                entries.append((weakref.ref(param), weakref.ref(grad), grad._version, position))
        state.snapshot = entries
        if entries and track not in self._watched:
            self._watched.append(track)


def _values_held(state: GradientState, entries: Snapshot) -> list[bool | torch.Tensor]:
    """Whether consumed gradients that look untouched (the same tensors, at the same
    versions) still hold values: a write through ``.data`` (``p.grad.data.zero_()``, an
    idiom of old tutorials; under ``torch.no_grad()`` too) moves no version, so only the
    values tell such a clear from gradients left to accumulate into.

    Read at once on the CPU. On CUDA, each one's largest magnitude is queued instead and read
    back with the step's values, which then decides (`GradientState.dirty_pending`). Nothing is
    read where the step already has a backward added to consumed gradients (the bug is
    found: one read a step, not one per backward), for gradients already pending, nor
    during a CUDA graph capture (the norms would become part of the user's graph)."""
    if not entries or state.dirty_param is not None or device_clock.capturing():
        return [True] * len(entries)
    pending = state.dirty_pending or {}
    # alive: their parameters hold them, looked at just before
    unknown = [cast(torch.Tensor, entry[1]()) for entry in entries if entry[3] not in pending]
    held = iter(norms.values_held(unknown))
    return [pending[entry[3]] if entry[3] in pending else next(held) for entry in entries]


def _grad_state(param_ref: weakref.ref | None) -> tuple[int, int, int] | None:
    """A parameter's gradient as id and version, holding no reference to it (a held gradient
    would make the next backward add out of place, into a new tensor)."""
    param = param_ref() if param_ref is not None else None
    grad = param.grad if param is not None else None
    if grad is None:
        return None
    local = getattr(grad, "_local_tensor", None)  # FSDP2 accumulates into a DTensor's shard
    return (id(grad), grad._version, local._version if local is not None else 0)


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()

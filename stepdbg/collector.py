"""From instrumentation events to per-step records.

`instrument` calls the ``on_*`` methods; this module keeps the state of the
loop (which gradients a step consumed, which backward filled them, what was
cleared since) and turns each optimizer step into a `StepRecord`.

Gradient state, not call patterns, decides the ordering rules: at a step the
consumed gradient tensors are remembered weakly with their ``_version``. Any
clearing (``set_to_none``, ``p.grad = None``, ``zero_()``) changes one of the
two, but for a write through ``.data``, which moves no version and shows only in
the values. A backward that bumps the version of a still-consumed gradient has
accumulated into stale gradients. That snapshot is only taken for optimizers
that were not cleared by an explicit ``zero_grad`` call in their last
iteration, so a correct loop pays nothing for it. See docs/gradient-state.md.

On CUDA, values are copied to the host asynchronously and read once an event
says they are ready (usually at the next step); nothing here syncs the device.
"""

from __future__ import annotations

import bisect
import math
import operator
import os
import sys
import threading
import time
import types
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from torch.utils.weak import WeakIdKeyDictionary

from . import norms
from .data_wait import DataWaits
from .device_clock import DeviceClock, DevicePhases, capturing, record_on
from .diagnostics import Diagnostics
from .memory import MemoryGauge
from .module_tree import ModuleTree
from .schema import (
    CALL_BACKWARD,
    CALL_ELIDED,
    CALL_GRAD,
    CALL_REPEAT,
    CALL_SCHEDULER,
    CALL_STEP,
    CALL_ZERO_GRAD,
    PHASES,
    OptimizerInfo,
    ParamGroupInfo,
    StepRecord,
)

_EMPTY: tuple = ()
"""Shared default for the fields of a step in progress that most steps never fill."""

SNAPSHOT_MAX_NUMEL = 1 << 28
"""Above this many parameter elements, update sizes are not measured (the copy would cost memory)."""

HELD_LOSSES = 1 << 12
"""At most this many losses wait for the step that consumes them. An optimizer idle for longer
(a second phase's, built at the start) finds its first step's loss unknown, rather than every
loss of the run kept for it (memory, on CUDA device memory, and time per step)."""

HELD_CALLS = 1 << 10
"""A record lists the last this many calls at most, after `CALL_ELIDED`: backward passes made
beside an optimizer that never steps would otherwise add to one list for the whole run."""

HELD_SPANS = HELD_CALLS
"""A record places at most this many calls in time (`StepRecord.spans`); an iteration with more
places none, and a timeline lays its phases end to end."""

LOSS_PRUNE_EVERY = 64
"""Losses already taken by every optimizer are looked for once this many are held."""

DISCARD_STREAK = 3
"""Steps in a row that each find backward passes of theirs cleared unused before a fresh one
(zero_grad inside a gradient-accumulation loop): one such step is a skipped batch, not a bug."""

ConsumedGradient = tuple[weakref.ref, weakref.ref, int, int]
"""A gradient a step consumed, as a snapshot keeps it: (parameter, gradient, the gradient's
version then, the parameter's position in the optimizer), both tensors held weakly."""


def compress_calls(calls: Sequence[str]) -> list[str]:
    """``[a, b, b, b]`` -> ``["a", "b×3"]``."""
    result: list[str] = []
    previous, count = None, 0
    for call in [*calls, None]:
        if call == previous:
            count += 1
            continue
        if previous is not None:
            result.append(previous if count == 1 else f"{previous}{CALL_REPEAT}{count}")
        previous, count = call, 1
    return result


def params_of(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """The optimizer's parameters whose ``.grad`` can be read (see `_gradient_holders`)."""
    return [p for group in optimizer.param_groups for p in _gradient_holders(group["params"])]


def _gradient_holders(params: list[torch.Tensor]) -> list[torch.Tensor]:
    """``params`` without the non-leaf tensors (a differentiable optimizer's fast weights, cloned
    from the real ones), whose ``.grad`` torch warns about reading when it is unset: stepdbg
    leaves them alone. The list itself where all are leaves, as they nearly always are."""
    if all(p.is_leaf or p.retains_grad for p in params):
        return params
    return [p for p in params if p.is_leaf or p.retains_grad]


def _first_param(optimizer: Any) -> torch.Tensor | None:
    try:
        return optimizer.param_groups[0]["params"][0]
    except (AttributeError, IndexError, KeyError, TypeError):
        return None


@dataclass(eq=False, slots=True)
class _Layout:
    """An optimizer's parameters as its steps read them, kept while its groups hold the same ones.

    A step reads every parameter's gradient; rebuilding the flat list, the
    positions and the norm strategy each time is most of the cost on small
    models, so they are cached, and checked at each step, parameter by
    parameter, against the groups' lists (an element swapped in place counts).
    The collector drops a layout when its optimizer is collected, so it never
    keeps a model alive.
    """

    sources: list[list[torch.Tensor]]
    """Copies of the groups' ``params`` lists as they were when the layout was made."""
    lists: list[list[torch.Tensor]]
    """The parameters of each group that stepdbg reads (``sources``' lists, where all are leaves)."""
    params: list[torch.Tensor]
    positions: list[int]
    group_of: list[int]
    norm_plan: tuple[list[int], norms.GroupNormPlan] | None = None
    """How a step takes its gradients' norms, for the positions of the parameters that had one
    (every one, or the same ones step after step where some are frozen); made when those change."""
    sharded: bool = False
    """Some parameter is a DTensor (FSDP2, tensor parallelism): norms are of this rank's shards."""
    roots: list[weakref.ref] | None = None
    """The root modules of the parameters, held weakly; found at the first detail step."""

    @property
    def partial(self) -> bool:
        """Some of the optimizer's tensors are not read (non-leaf ones: see `_gradient_holders`):
        what its gradients look like says nothing sure about the ordering rules."""
        return any(read is not source for read, source in zip(self.lists, self.sources))

    @classmethod
    def of(cls, optimizer: Any) -> _Layout:
        sources = [list(group["params"]) for group in optimizer.param_groups]
        lists = [_gradient_holders(params) for params in sources]
        params = [p for params in lists for p in params]
        group_of = [index for index, params in enumerate(lists) for _ in params]
        sharded = any(norms.is_sharded(p) for p in params)
        return cls(sources, lists, params, list(range(len(params))), group_of, sharded=sharded)

    def local_params(self) -> list[torch.Tensor]:
        """The parameters as this rank holds them (see `sharded`)."""
        return norms.local_shards(self.params) if self.sharded else self.params

    def matches(self, optimizer: Any) -> bool:
        groups = optimizer.param_groups
        if len(groups) != len(self.sources):
            return False
        for group, cached in zip(groups, self.sources):
            live = group["params"]
            if len(live) != len(cached) or not all(map(operator.is_, live, cached)):
                return False
        return True

    def group_lengths(self, present: list[int]) -> list[int]:
        """How many of the parameters at ``present`` (in order) each group holds."""
        if present is self.positions:
            return [len(params) for params in self.lists]
        lengths = [0] * len(self.lists)
        for position in present:
            lengths[self.group_of[position]] += 1
        return lengths

    def grad_norm_pieces(self, grads: list[torch.Tensor], present: list[int]) -> tuple[list[torch.Tensor], list[int]]:
        """Norm pieces of ``grads`` (those of the parameters at ``present``) and how many each group has."""
        cached = self.norm_plan
        if cached is not None and (cached[0] is present or cached[0] == present):
            plan = cached[1]
        else:
            plan = norms.GroupNormPlan.of(grads, self.group_lengths(present))
            self.norm_plan = (present, plan)
        try:
            return plan.pieces(grads)
        except RuntimeError:  # no longer one buffer: a gradient made sparse, parameters moved across devices
            if plan.runs is None:
                raise
            self.norm_plan = (present, plan.without_buffer())
            return self.norm_plan[1].pieces(grads)


@dataclass(eq=False)
class OptimizerTrack:
    """What stepdbg knows about one optimizer (the inner one, whatever wraps it)."""

    index: int
    steps: int = 0
    last_step_backward: int = -1
    """Global backward count at this optimizer's previous step; -1 before its first."""
    mark: int = 0
    """Global backward count when its gradients last started accumulating (clear or step)."""
    cleared_since_step: bool = False
    clear_after_backward: bool = False
    sentinel: weakref.ref | None = None
    """A trainable parameter, looked at after each backward: did the backward reach this optimizer?"""
    filled_at: int = -1
    """The last backward after which the sentinel had a gradient."""
    last_sentinel: weakref.ref | None = None
    """The last trainable parameter: a backward that changes neither its gradient nor the
    sentinel's did not reach this optimizer (another model's loss, ``backward(inputs=...)``)."""
    reach_before: tuple[Any, Any] = (None, None)
    """Both sentinels' gradients (id and version, no reference) as the current backward began."""
    missed: list[list[int]] = field(default_factory=list)
    """Runs ``[first, last]`` of backward passes that did not reach it: not among its step's.
    Runs, so that an optimizer idle while another trains holds one entry, not one a step."""
    step_before_backward: bool = False
    param_version: int | None = None
    """The sentinel's version as its previous step left it: a clear finding it unchanged comes
    before the parameters were touched, so it throws away what backward passes since computed."""
    scheduler_ahead: tuple[str, int] | None = None
    """A scheduler of its stepped over gradients waiting for it: its class, and the global
    backward count then (see `Collector._check_scheduler_order`)."""
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
    `Collector._set_since_clear`."""
    snapshot: list[ConsumedGradient] | None = None
    """The gradients its previous step consumed, while a backward may still add to them (see the
    module docstring)."""
    dirty_param: int | None = None
    """The first position where a backward added to gradients its previous step consumed."""
    dirty_pending: dict[int, torch.Tensor] | None = None
    """Positions where a backward added to a consumed gradient that looked untouched, by
    position: its largest magnitude as that backward began, still on a CUDA device. Non-zero:
    it held the consumed values (missing-zero-grad); zero: it had been cleared through ``.data``.
    The step decides once they are read back with its values (`_StepInProgress.dirty_pending`)."""
    consumed: tuple[int, weakref.ref, int] | None = None
    """One gradient its previous step consumed: (position, the tensor held weakly, its version).
    A step with no backward since compares it with what it finds: the same tensor, unchanged,
    is stale (step twice, step before backward); another tensor, or one written since, was set
    by hand (``p.grad = g`` from ``torch.func`` or ``autograd.grad``): fresh gradients."""
    depth: int = 0
    param_ids: set[int] = field(default_factory=set)
    """Ids of the parameters its optimizer holds, as last seen."""
    sharing: list[OptimizerTrack] = field(default_factory=list)
    """Other optimizers holding some of the same parameters (SAM and the optimizer inside it):
    clearing through one clears the other's gradients too."""
    info: OptimizerInfo | None = None
    names: list[str] = field(default_factory=list)
    """Qualified names of the parameters, in the optimizer's order (once announced)."""
    layout: _Layout | None = None
    """Cached only for an optimizer that can be watched for collection, and dropped with it."""
    # the step in progress
    step_start: float = 0.0
    step_event: Any = None
    intervals_at_start: int = 0
    backward_time_at_start: float = 0.0
    zero_grad_time_at_start: float = 0.0
    data_time_at_start: float = 0.0
    closure: bool = False
    pending: _StepInProgress | None = None
    stepping_id: int = 0
    """``id`` of the optimizer whose step is running (no reference): found on the stack, or gone."""

    def sentinel_param(self) -> torch.Tensor | None:
        return self.sentinel() if self.sentinel is not None else None


@dataclass(slots=True)
class _StepInProgress:
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
    ordering: list[tuple[str, str, str | None]] | None = None
    dirty_pending: list[tuple[int, torch.Tensor]] = _EMPTY  # type: ignore[assignment]
    """See `OptimizerTrack.dirty_pending`: read back with the step's values, judged in `Collector._complete`."""
    inside: bool = False
    """A step without a closure argument ran backward passes itself (see `Collector._end_step_with_backward_inside`)."""
    filled_inside: weakref.ref | None = None
    """The optimizer's first trainable gradient as the last of those passes left it."""

    def add_ordering(self, rule: str, message: str, param: str | None = None) -> None:
        if self.ordering is None:
            self.ordering = []
        self.ordering.append((rule, message, param))

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


@dataclass(slots=True)
class _Unheld:
    """A parameter that had gradients, and no optimizer, at an optimizer's detail step."""

    optimizer: int
    step: int
    param: weakref.ref
    name: str
    message: str


class _Resolved:
    """Values of a step waiting on the device: a pinned host copy and an event (and the
    iteration's timing events, done once their last one is). The copy is queued at once,
    or, where the values were made before a CUDA graph capture that runs now (the record of
    a backward made with no optimizer, finished at the next iteration's first call), once
    the capture is over: queued during it, it would become part of the user's graph."""

    def __init__(self, pieces: list[torch.Tensor], phases: DevicePhases | None = None) -> None:
        self.phases = phases
        self.values: torch.Tensor | None = None
        self.host: torch.Tensor | None = None
        self.event: Any = None
        self._pieces: list[torch.Tensor] | None = pieces
        if not (pieces and capturing()):
            self._copy()

    def _copy(self) -> None:
        pieces, self._pieces = self._pieces, None
        values = self.values = norms.stack(pieces or [])
        if values is not None and values.is_cuda:
            self.host = torch.empty(values.shape, dtype=values.dtype, pin_memory=True)
            self.host.copy_(values, non_blocking=True)
            self.event = torch.Event("cuda", enable_timing=False)  # see `device_clock.cuda_event`
            record_on(self.event, values.device.index)  # the copy runs on the values' device

    def ready(self) -> bool:
        if self._pieces is not None:
            self._copy()  # never called while a capture runs (see `Collector._finish_record`)
        return (self.event is None or bool(self.event.query())) and (self.phases is None or self.phases.ready())

    def floats(self) -> list[float]:
        if self._pieces is not None:
            self._copy()
        if self.phases is not None:
            self.phases.end.synchronize()  # only waits when the run ends (see `ready`)
        if self.values is None:
            return []
        if self.host is not None:
            self.event.synchronize()  # only reached once ready(), or when the run ends
            return self.host.tolist()
        return self.values.tolist()


class Collector:
    """Receives instrumentation events and emits step records and ordering anomalies."""

    def __init__(
        self,
        every: int,
        diagnostics: Diagnostics,
        emit_step: Callable[[StepRecord], None],
        emit_optimizer: Callable[[OptimizerInfo], None],
        tree: ModuleTree,
        clock: Callable[[], float] = time.perf_counter,
        make_event: Callable[[], Any] | None = None,
        memory: MemoryGauge | None = None,
    ) -> None:
        self.every = every
        self.diagnostics = diagnostics
        self._emit_step = emit_step
        self._emit_optimizer = emit_optimizer
        self.tree = tree
        self.clock = clock
        self.start = clock()
        self.records = 0
        self.optimizers_created = 0
        self._tracks: list[OptimizerTrack] = []
        self._tracks_by_param: dict[int, OptimizerTrack] = {}
        self._tracks_by_optimizer: dict[int, OptimizerTrack] = {}
        """By ``id`` of the optimizer object, while it lives (wrappers are found by their parameters)."""
        self._frozen_seen = WeakIdKeyDictionary()
        """Parameters seen not requiring grad at a detail step (see `_check_not_in_optimizer`)."""
        self._unheld: list[_Unheld] = []
        """Parameters with gradients and no optimizer at a detail step, until `_report_unheld`."""
        self._announced = 0
        self._watched: list[OptimizerTrack] = []
        self._stale: list[tuple[OptimizerTrack, list[ConsumedGradient], int, bool | torch.Tensor]] = []
        """Consumed gradients the running backward may add to: the track, its snapshot, the
        index in it, and whether the gradient held values (see `_values_held`)."""
        self._waiting: deque[tuple[_StepInProgress, _Resolved]] = deque()
        # the iteration in progress (since the previous step record)
        self.calls: list[str] = []
        self.backward_count = 0
        self._backward_depth = 0
        self._stepping: OptimizerTrack | None = None
        """The optimizer whose step is running (the outermost, where one steps another)."""
        self._backward_start = 0.0
        self._zero_grad_depth = 0
        self._zero_grad_start = 0.0
        self._schedulers: list[list[Any]] = []
        """[weak scheduler, its step count and ``id`` of its last lrs when last seen]"""
        self._calls_cache: dict[tuple[str, ...], list[str]] = {}
        self.totals = dict.fromkeys((*PHASES, "overhead"), 0.0)
        """Seconds per phase over the whole run, for the end record."""
        self._losses: list[tuple[int, Any]] = []
        """(backward count, loss) of the backward passes not yet consumed by every optimizer."""
        self._losses_dropped_through = 0
        """Backward count of the last loss dropped to keep `_losses` within `HELD_LOSSES`."""
        self._prune_at = LOSS_PRUNE_EVERY
        """`_losses`' length at which `_prune_losses` looks again."""
        self._device_losses = False
        """Some loss was a device tensor: steps look for one among theirs."""
        # seconds in each timed phase since the previous step record (forward is what is left)
        self._backward_seconds = 0.0
        self._step_seconds = 0.0
        self._zero_grad_seconds = 0.0
        self._overhead = 0.0
        self._spans: list[str | float] = []
        """Where each call of the iteration lay in time, for timelines (see `_span`)."""
        self._last_end: float | None = None
        """End of the previous step record; None until the loop's first instrumented call."""
        self.no_optimizer_steps = 0
        self.active_scaler: Any = None
        self._manual = OptimizerTrack(index=-1)
        """Stands for the missing optimizer in a loop without one."""
        self._manual_leaves: list[weakref.ref] = []
        """A loop without optimizer: the leaf tensors its backward reaches (found from the graph)."""
        self._unowned: tuple[_StepInProgress, float] | None = None
        """The record of a backward made with no optimizer, and its end, until `_finish_unowned`."""
        self.device = DeviceClock(make_event)
        """Phase boundaries as CUDA events, once the loop is seen on CUDA (``make_event``: tests' stand-in)."""
        self.data = DataWaits(clock)
        self.memory = memory if memory is not None else MemoryGauge()
        """Read at each step's end (`Instrumentation` opens and closes it)."""
        self._zero_grad_event: Any = None
        self._backward_event: Any = None
        self._scaler_event: Any = None
        self._fetch_event: Any = None

    def _span(self, phase: str, start: float, end: float) -> None:
        """Place a call in its iteration: its start from the iteration's, and its length, to the
        microsecond (a timeline's resolution, in fewer digits). A few float operations a call."""
        spans = self._spans
        if len(spans) <= 3 * HELD_SPANS:
            base = self._last_end if self._last_end is not None else start
            offset = int((start - base) * 1e6)
            spans += (phase, offset / 1e6, (int((end - base) * 1e6) - offset) / 1e6)

    def _loop_started(self) -> float:
        """Now; the first call also starts the first iteration's clock (set-up is not a step)."""
        if self._unowned is not None:
            self._finish_unowned()
        if self._schedulers:
            self._poll_schedulers()
        now = self.clock()
        if self._last_end is None:
            self._last_end = now
        return now

    def _on_cuda(self, index: int | None) -> None:
        """The loop's values are on CUDA device ``index``: time it with events, and read that
        device's allocator for the step's memory."""
        self.device.start_timing(index)
        self.memory.watch_cuda(index)

    # ---- DataLoader fetches ---------------------------------------------------------------

    def on_fetch_start(self, iterator: Any) -> float | None:
        """A DataLoader iterator's ``__next__`` begins: when (None: inside another fetch). A
        loop's first fetch starts its first iteration's clock, as any instrumented call does."""
        if self._unowned is not None and threading.get_ident() == self.data.thread:
            self._finish_unowned()  # the loop's next iteration begins with this fetch
        started = self.data.start(iterator)
        if started is None:
            return None
        if self._last_end is None:
            self._last_end = started
        if self.device.on:
            self._fetch_event = self.device.mark()
        return started

    def on_fetch_end(self, started: float, fetched: bool) -> None:
        event, self._fetch_event = self._fetch_event, None
        ended = self.data.end(started, fetched)
        if ended is None:
            return
        self._span("data", started, ended)
        if event is not None:
            self.device.close("data", event)

    # ---- optimizers -------------------------------------------------------------------

    def on_optimizer_created(self, optimizer: torch.optim.Optimizer) -> None:
        self._unowned = None  # built during the iteration of a backward made with none: it owns that backward
        track = OptimizerTrack(index=self.optimizers_created)
        self.optimizers_created += 1
        self._tracks.append(track)
        self._hold(track, params_of(optimizer))
        # its gradients start from here (a model trained per fold, an inner loop's fresh
        # optimizer), or from the last backward if it is built with gradients in place
        sentinel = track.sentinel_param()
        filled = sentinel is not None and sentinel.grad is not None and self.backward_count > 0
        track.mark = self.backward_count - 1 if filled else self.backward_count
        try:
            weakref.finalize(optimizer, self._forget_optimizer, id(optimizer), track)
        except TypeError:
            return  # no weak references: found by its parameters, its layout rebuilt at each step
        self._tracks_by_optimizer[id(optimizer)] = track

    def _forget_optimizer(self, key: int, track: OptimizerTrack) -> None:
        """The optimizer is gone: its id may be reused, its cached layout must not keep its
        parameters alive, and its track goes (a loop that builds an optimizer each iteration
        would otherwise make every backward slower than the last).

        Called by a weakref finalizer, possibly while a hook walks these lists: each is
        replaced, never changed in place (the dicts are only ever looked up).
        """
        if self._tracks_by_optimizer.get(key) is track:
            del self._tracks_by_optimizer[key]
        track.layout = None
        self._tracks = [t for t in self._tracks if t is not track]
        self._watched = [t for t in self._watched if t is not track]
        for other in track.sharing:
            other.sharing = [t for t in other.sharing if t is not track]
        for param_id in track.param_ids:
            if self._tracks_by_param.get(param_id) is track:
                heir = next((t for t in track.sharing if param_id in t.param_ids), None)
                if heir is None:
                    del self._tracks_by_param[param_id]
                else:  # another optimizer still holds it (SAM's inner one)
                    self._tracks_by_param[param_id] = heir

    def _hold(self, track: OptimizerTrack, params: list[torch.Tensor]) -> None:
        """``track``'s optimizer holds ``params`` (at creation, and again when its groups change)."""
        ids = {id(p) for p in params}
        for stale in track.param_ids - ids:
            if self._tracks_by_param.get(stale) is track:
                del self._tracks_by_param[stale]
        for param in params:
            other = self._tracks_by_param.get(id(param))
            if other is not None and other is not track and other not in track.sharing:
                track.sharing.append(other)
                other.sharing.append(track)
            self._tracks_by_param[id(param)] = track
        track.param_ids = ids
        sentinel = track.sentinel_param()
        if sentinel is None or id(sentinel) not in ids:
            trainable = next((p for p in params if p.requires_grad), None)
            track.sentinel = weakref.ref(trainable) if trainable is not None else None
        last = next((p for p in reversed(params) if p.requires_grad), None)
        track.last_sentinel = weakref.ref(last) if last is not None else None

    def track_for(self, optimizer: Any) -> OptimizerTrack | None:
        """The track of an optimizer (even once all its parameters were replaced), or of a
        wrapper around one, found by its first parameter."""
        track = self._tracks_by_optimizer.get(id(optimizer))
        if track is not None:
            return track
        first = _first_param(optimizer)
        if first is None:
            return None
        track = self._tracks_by_param.get(id(first))
        if track is None and hasattr(optimizer, "param_groups"):
            self.on_optimizer_created(optimizer)  # built before stepdbg started
            track = self._tracks_by_param.get(id(first))
        return track

    # ---- zero_grad ----------------------------------------------------------------------

    def on_zero_grad_start(self) -> bool:
        """Returns whether this is the outermost clearing call (nested ones are not counted)."""
        self._zero_grad_depth += 1
        if self._zero_grad_depth > 1:
            return False
        self._zero_grad_start = self._loop_started()
        if self.device.on:
            self._zero_grad_event = self.device.mark()
        self.calls.append(CALL_ZERO_GRAD)
        return True

    def on_zero_grad_end(self, cleared: list[torch.Tensor] | None, optimizer: Any = None) -> None:
        self._zero_grad_depth -= 1
        if self._zero_grad_depth > 0:
            return
        end = self.clock()
        self._zero_grad_seconds += end - self._zero_grad_start
        self._span(CALL_ZERO_GRAD, self._zero_grad_start, end)
        if self.device.on:
            self.device.close("zero_grad", self._zero_grad_event)
        if optimizer is not None:
            track = self.track_for(optimizer)
            if track is not None:
                self._cleared(track)
                if track.sharing:
                    self._cleared_params(params_of(optimizer), besides=track)
        elif cleared is not None:
            self._cleared_params(cleared)
        self._overhead += self.clock() - end

    def _cleared(self, track: OptimizerTrack) -> None:
        """All of ``track``'s gradients were cleared by an explicit call."""
        track.cleared_since_step = True
        since = max(track.last_step_backward, track.mark)
        track.clear_after_backward = self.backward_count > since
        sentinel = track.sentinel_param()
        unused = self.backward_count - max(since, track.backward_at_step_end)
        if unused > 0 and track.param_version is not None and len(self._tracks) == 1:
            if sentinel is not None and sentinel._version == track.param_version:
                track.discarded += unused
                track.discarding_clears += 1
        track.mark = self.backward_count
        track.snapshot = None
        track.dirty_param = None
        track.dirty_pending = None
        grad = sentinel.grad if sentinel is not None else None
        track.cleared_grad = weakref.ref(grad) if grad is not None else None
        if track.consumed is not None and (grad := track.consumed[1]()) is not None:
            # zeroed in place (set_to_none=False): cleared, not set by hand
            track.consumed = (track.consumed[0], track.consumed[1], grad._version)

    def _cleared_params(self, params: list[torch.Tensor], besides: OptimizerTrack | None = None) -> None:
        """A module's gradients were cleared (or an optimizer's, ``besides``, that shares
        them): all of some optimizers', part of others'."""
        covered: dict[OptimizerTrack, set[int]] = {}
        for param in params:
            track = self._tracks_by_param.get(id(param))
            if track is not None:
                covered.setdefault(track, set()).add(id(param))
                for other in track.sharing:
                    if id(param) in other.param_ids:
                        covered.setdefault(other, set()).add(id(param))
        if besides is not None:
            covered.pop(besides, None)
        for track, ids in covered.items():
            if len(ids) == len(track.param_ids):  # all of them: ``ids`` are among them
                self._cleared(track)
            elif track.snapshot is not None:
                track.snapshot = [e for e in track.snapshot if (p := e[0]()) is not None and id(p) not in ids]

    # ---- backward -----------------------------------------------------------------------

    def on_backward_start(self, outputs: Sequence[Any], accumulate: bool) -> bool:
        """Returns whether this is an outermost backward (nested ones are part of it)."""
        self._backward_depth += 1
        if self._backward_depth > 1:
            return False
        entered = self._loop_started()
        if not accumulate:
            self.calls.append(CALL_GRAD)
        else:
            if self._stepping is not None and not self._stepping.closure:
                self._abandon_steps_that_raised()
                if self._stepping is not None:
                    self._backward_inside_step(self._stepping)
            if self._unheld and self._stepping is None:
                self._report_unheld()
            loss = _loss_value(outputs)
            if isinstance(loss, torch.Tensor):
                self._device_losses = True
                self._on_cuda(loss.device.index)
            if self._watched:
                self._check_cleared_since_step()
            if len(self._tracks) > 1:  # which optimizers it reaches, where there is a choice (a few us)
                for track in self._tracks:
                    track.reach_before = (_grad_state(track.sentinel), _grad_state(track.last_sentinel))
            if self.optimizers_created == 0 and self._manual_leaves_lost():
                self._manual_leaves = [weakref.ref(leaf) for leaf in _graph_leaves(outputs)]
            # Counted as it starts: a step made inside it (an optimizer stepped from a
            # post-accumulate-grad hook, PyTorch's "fuse the optimizer into backward" recipe)
            # consumes the gradients this backward is filling.
            self.calls.append(CALL_BACKWARD)
            if len(self.calls) > HELD_CALLS:
                self.calls = [CALL_ELIDED, *self.calls[-(HELD_CALLS // 2) :]]
            self.backward_count += 1
            self._losses.append((self.backward_count, loss))
            if len(self._losses) >= self._prune_at:
                self._prune_losses()
        self._overhead += self.clock() - entered
        self._backward_start = self.clock()
        if self.device.on:
            self._backward_event = self.device.mark()
        return True

    def _abandon_steps_that_raised(self) -> None:
        """Steps with no closure that a backward, or an unrelated step, finds still running, and
        whose ``step`` is no longer on the stack, raised (the script caught it: an out-of-memory
        fallback): PyTorch ran no post-hook. Their records are dropped, and those optimizers
        step anew. One still on the stack runs a backward itself (a curvature estimate)."""
        running = _optimizers_stepping()
        for track in self._tracks:
            if track.depth and not track.closure and track.stepping_id not in running:
                if track.pending is not None:
                    track.steps -= 1  # the count is of steps made
                track.depth = 0
                track.pending = None
                if self._stepping is track:
                    self._stepping = None

    def _manual_leaves_lost(self) -> bool:
        """No leaves known yet, or one is gone (a loop that makes new tensors each iteration)."""
        return not self._manual_leaves or any(ref() is None for ref in self._manual_leaves)

    def on_backward_end(self, accumulate: bool) -> None:
        self._backward_depth -= 1
        if self._backward_depth > 0:
            return
        end = self.clock()
        self._backward_seconds += end - self._backward_start
        self._span(CALL_BACKWARD, self._backward_start, end)
        if self.device.on:
            self.device.close("backward", self._backward_event)
        if accumulate:
            if self._stale:
                self._check_accumulated_into_stale()
            if self._stepping is not None and self._stepping.pending is not None and self._stepping.pending.inside:
                self._filled_inside(self._stepping.pending)
            several = len(self._tracks) > 1
            for track in self._tracks:
                sentinel = track.sentinel_param()
                if sentinel is not None and (grad := sentinel.grad) is not None:
                    track.filled_at = self.backward_count
                    if track.discarded:
                        track.grad_after_discard = weakref.ref(grad)
                if several and track.mark < self.backward_count and track.reach_before == (
                    _grad_state(track.sentinel), _grad_state(track.last_sentinel)
                ):  # not reached (and not consumed by a step inside it)
                    self._missed(track)
            if self.optimizers_created == 0:
                self._no_optimizer_step()
        self._overhead += self.clock() - end

    def _missed(self, track: OptimizerTrack) -> None:
        """The backward that just ended did not reach ``track``'s optimizer."""
        runs, count = track.missed, self.backward_count
        if runs and runs[-1][1] == count - 1:
            runs[-1][1] = count
        else:
            runs.append([count, count])
            if len(runs) > HELD_LOSSES:  # reached and missed in turn, for ever: keep it bounded
                del runs[: HELD_LOSSES // 2]

    def _check_cleared_since_step(self) -> None:
        """Before a backward: which consumed gradients are still there, uncleared?

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
            if track.snapshot is None:
                continue
            untouched: list[ConsumedGradient] = []
            moved: list[tuple[Any, torch.Tensor, int]] = []
            for entry in track.snapshot:
                param_ref, grad_ref, version, position = entry
                param = param_ref()
                grad: torch.Tensor | None = param.grad if param is not None else None
                if grad is None:
                    continue
                if grad._version == version and grad_ref() is grad:
                    untouched.append(entry)
                elif grad_ref() is not grad and grad._is_view() and _distributed():
                    moved.append((param_ref, grad, position))
            kept: list[ConsumedGradient] = []
            for entry, held in zip(untouched, self._values_held(track, untouched)):
                if held is not False:  # False: zeroed through .data, a clear like any other
                    self._stale.append((track, kept, len(kept), held))
                    kept.append(entry)
            if moved:
                held_values = norms.holding_values([grad for _, grad, _ in moved])
                for (param_ref, view, position), holds in zip(moved, held_values):
                    if holds:
                        self._stale.append((track, kept, len(kept), True))
                        kept.append((param_ref, weakref.ref(view), view._version, position))
            if len(kept) < len(track.snapshot):
                if not track.cleared_since_step:  # cleared without a call we saw: p.grad = None, zero_()
                    inferred_clear = True
                    if not kept:
                        track.mark = self.backward_count
            track.snapshot = kept
            if kept:
                still_watched.append(track)
        self._watched = still_watched
        if inferred_clear:
            self.calls.append(CALL_ZERO_GRAD)

    def _values_held(self, track: OptimizerTrack, entries: list[ConsumedGradient]) -> list[bool | torch.Tensor]:
        """Whether consumed gradients that look untouched (the same tensors, at the same
        versions) still hold values: a write through ``.data`` (``p.grad.data.zero_()``, an
        idiom of old tutorials; under ``torch.no_grad()`` too) moves no version, so only the
        values tell such a clear from gradients left to accumulate into.

        Read at once on the CPU. On CUDA, each one's largest magnitude is queued instead and read
        back with the step's values, which then decides (`OptimizerTrack.dirty_pending`). Nothing is
        read where the step already has a backward added to consumed gradients (the bug is
        found: one read a step, not one per backward), for gradients already pending, nor
        during a CUDA graph capture (the norms would become part of the user's graph)."""
        if not entries or track.dirty_param is not None or capturing():
            return [True] * len(entries)
        pending = track.dirty_pending or {}
        # alive: their parameters hold them, looked at just before
        unknown = [cast(torch.Tensor, entry[1]()) for entry in entries if entry[3] not in pending]
        held = iter(norms.values_held(unknown))
        return [pending[entry[3]] if entry[3] in pending else next(held) for entry in entries]

    def _check_accumulated_into_stale(self) -> None:
        """After a backward: did it add to gradients a step had already consumed?

        Such a gradient stays watched at its new version: the next backward's check then
        sees a clear only if one happens (a version moved by this backward is no clear)."""
        for track, snapshot, index, held in self._stale:
            param_ref, grad_ref, version, position = snapshot[index]
            grad = grad_ref()
            if grad is not None and grad._version != version:
                if not isinstance(held, torch.Tensor):
                    if track.dirty_param is None:
                        track.dirty_param = position
                elif track.dirty_pending is None:
                    track.dirty_pending = {position: held}
                else:
                    track.dirty_pending.setdefault(position, held)
                if track.snapshot is snapshot:  # not replaced by a step inside the backward
                    snapshot[index] = (param_ref, grad_ref, grad._version, position)
        self._stale = []

    # ---- lr schedulers ------------------------------------------------------------------

    def on_scheduler_created(self, scheduler: Any) -> None:
        """A scheduler to poll. One made of others (SequentialLR, ChainedScheduler) comes first,
        so that a step is put down to it, by name."""
        state = _scheduler_state(scheduler)
        for entry in self._schedulers:
            if entry[0]() is scheduler:  # SequentialLR runs its first child's initial step again
                entry[1:] = state
                return
        entry = [weakref.ref(scheduler), *state]
        if hasattr(scheduler, "_schedulers"):
            self._schedulers.insert(0, entry)
        else:
            self._schedulers.append(entry)

    def _poll_schedulers(self) -> None:
        """Notice the scheduler steps made since the previous instrumented call.

        A step moves a scheduler's count by one, or, for those whose ``step`` keeps no count
        (CosineAnnealingWarmRestarts, ChainedScheduler, SequentialLR at a milestone), gives
        it new last lrs, the very floats it set in the optimizer (`_stepped_here`). Any other
        move is a checkpoint's ``load_state_dict``: taken as the scheduler's new state,
        neither a call nor a misplaced step. Several steps at once (twice an iteration, or
        fast-forwarding a resumed run) are as many calls.
        """
        stepped: list[tuple[Any, int]] | None = None
        collected = False
        for entry in self._schedulers:
            scheduler = entry[0]()
            if scheduler is None:
                collected = True
                continue
            count, last_lr = _scheduler_state(scheduler)
            if count == entry[1] and last_lr == entry[2]:
                continue
            moved, entry[1], entry[2] = count - entry[1], count, last_lr
            if moved != 1:
                if not _stepped_here(scheduler):
                    continue
                moved = max(moved, 1)
            if stepped is None:
                stepped = []
            stepped.append((scheduler, moved))
        if collected:
            self._schedulers = [entry for entry in self._schedulers if entry[0]() is not None]
        if stepped is None:
            return
        seen: set[int] = set()
        for scheduler, times in stepped:
            track = self.track_for(getattr(scheduler, "optimizer", None))
            if id(track) in seen:
                continue  # a chained scheduler steps its children too: one call
            seen.add(id(track))
            self.calls.extend([CALL_SCHEDULER] * times)
            if track is not None:
                self._check_scheduler_order(track, scheduler)

    def _check_scheduler_order(self, track: OptimizerTrack, scheduler: Any) -> None:
        """A scheduler stepped before its optimizer ever did (but for a resumed optimizer,
        its state loaded, fast-forwarding a new scheduler), or between a backward and the
        step that uses its gradients: that is decided at the step (`_check_scheduler_ahead`),
        since a per-epoch scheduler may step while gradients of an unfinished accumulation
        wait, and they carry on into the next epoch or are cleared."""
        name = type(scheduler).__name__
        if track.steps == 0 and _stepped_here(scheduler) and not getattr(getattr(scheduler, "optimizer", None), "state", None):
            self._report_scheduler_ahead(track, name, 0)
        elif track.cleared_since_step and self.backward_count > track.mark:
            track.scheduler_ahead = (name, self.backward_count)

    def _check_scheduler_ahead(self, track: OptimizerTrack, step: int) -> None:
        """Step ``step`` after a scheduler stepped over waiting gradients: a misplaced
        scheduler if no backward ran since, so that this step uses those very gradients."""
        name, at = track.scheduler_ahead  # type: ignore[misc]
        track.scheduler_ahead = None
        if at == self.backward_count:
            self._report_scheduler_ahead(track, name, step)

    def _report_scheduler_ahead(self, track: OptimizerTrack, name: str, step: int) -> None:
        self.diagnostics.report(
            "scheduler-before-step",
            step,
            track.index,
            f"{name}.step() ran before optimizer {track.index}'s step {step}",
            t=self.clock() - self.start,
        )

    # ---- optimizer steps ----------------------------------------------------------------

    def on_step_start(self, optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        track = self.track_for(optimizer)
        if track is None:
            return
        outer = self._stepping
        if outer is not None and outer is not track and not outer.closure and not track.param_ids <= outer.param_ids:
            self._abandon_steps_that_raised()  # an unrelated step cannot run inside a closure-less one
            outer = self._stepping
        track.depth += 1
        if track.depth > 1:
            return  # a subclass's step calling super().step()
        if outer is not None and outer is not track and track.param_ids <= outer.param_ids:
            # a wrapped optimizer's step (SAM, Lookahead, ZeroRedundancyOptimizer): part of the
            # wrapper's record; it has stepped all the same (for its lr scheduler's order)
            track.pending = None
            track.steps += 1
            self._mark_consumed(track)
            return
        self._stepping = track
        track.stepping_id = id(optimizer)
        entered = self._loop_started()
        self.calls.append(CALL_STEP)
        if track.info is None:
            self._announce(track, optimizer)
        closure = args[1] if len(args) > 1 else kwargs.get("closure")
        track.closure = closure is not None
        progress = self._begin_record(track, optimizer)
        track.pending = progress
        if not track.closure:
            self._consume(progress, optimizer)
        track.backward_time_at_start = self._backward_seconds
        track.zero_grad_time_at_start = self._zero_grad_seconds
        track.data_time_at_start = self.data.seconds
        now = self.clock()
        self._overhead += now - entered
        self._span("overhead", entered, now)
        track.step_start = now
        if self.device.on:
            track.step_event = self.device.mark()
            track.intervals_at_start = len(self.device.intervals)

    def on_step_end(self, optimizer: torch.optim.Optimizer) -> None:
        track = self.track_for(optimizer)
        if track is None or track.depth == 0:
            return
        track.depth -= 1
        if track.depth > 0:
            return
        if self._stepping is track:
            self._stepping = None
        if track.pending is None:
            return
        end = self.clock()
        inner = (
            (self._backward_seconds - track.backward_time_at_start)
            + (self._zero_grad_seconds - track.zero_grad_time_at_start)
            + (self.data.seconds - track.data_time_at_start)
        )
        self._step_seconds += end - track.step_start - inner
        self._span(CALL_STEP, track.step_start, end)
        if self.device.on:
            self.device.close("step", track.step_event, track.intervals_at_start)
        progress, track.pending = track.pending, None
        sentinel = track.sentinel_param()
        track.param_version = sentinel._version if sentinel is not None else None
        track.backward_at_step_end = self.backward_count
        if track.closure:
            self._check_accumulated(progress)
            self._consume(progress, optimizer)
        elif progress.inside:
            self._end_step_with_backward_inside(progress, optimizer)
        self._finish_record(progress, end)
        self._overhead_after_record(end)

    def _backward_inside_step(self, track: OptimizerTrack) -> None:
        """A backward starts inside ``track``'s running step, which has no closure argument
        (GSAM's ``step()`` runs two forward and backward passes itself; a curvature estimate
        backpropagates once more). The gradients its start read are not consumed yet: its own
        passes may add to them, and the step decides at its end what it stepped on."""
        progress = track.pending
        if progress is None or progress.inside:
            return
        progress.inside = True
        track.snapshot = None

    @staticmethod
    def _filled_inside(progress: _StepInProgress) -> None:
        """A backward inside the step ended: the gradient it left (weakly: see `_grad_state`)."""
        sentinel = progress.track.sentinel_param()
        grad = sentinel.grad if sentinel is not None else None
        progress.filled_inside = weakref.ref(grad) if grad is not None else None

    def _end_step_with_backward_inside(self, progress: _StepInProgress, optimizer: Any) -> None:
        """The end of a step that ran backward passes of its own, without a closure argument.

        Where it ends on the gradient tensors they left, it is read again now, as a step with
        a closure is: their count, their loss and the gradients' norms are its own (what its
        start judged and read was about gradients it did not step on, but for backward passes
        accumulated into stale gradients that nothing cleared inside). Where it ends on others
        (a curvature estimate that puts back the gradients it started with), its start's
        reading stands. Either way its passes are no one else's: what follows accumulates anew.
        """
        track = progress.track
        layout = self._layout(track, optimizer)
        filled = progress.filled_inside() if progress.filled_inside is not None else None
        sentinel = track.sentinel_param()
        if filled is None or sentinel is None or sentinel.grad is not filled:
            self._mark_consumed(track, layout.params)
            return
        cleared_inside = track.cleared_since_step
        if progress.ordering is not None:
            kept = [o for o in progress.ordering if o[0] == "missing-zero-grad" and not cleared_inside]
            progress.ordering = kept or None
        if progress.record.step == 0:
            track.step_before_backward = False  # its first step found no gradient, and made them
        losses, backward_calls = ([], 0) if cleared_inside else (progress.losses, progress.record.backward_calls)
        self._forget_unheld(track.index, progress.record.step)
        track.closure = True
        self._consume(progress, optimizer)
        progress.losses = [*losses, *progress.losses]
        progress.record.backward_calls += backward_calls

    def on_scaler_step_start(self, scaler: Any, optimizer: Any) -> int:
        """Before GradScaler.step: returns the optimizer's step count, to see if it stepped."""
        self.active_scaler = scaler
        if self.device.on:
            self._scaler_event = self.device.mark()
        track = self.track_for(optimizer)
        return track.steps if track is not None else -1

    def on_scaler_step_end(self, optimizer: Any, steps_before: int, started: float) -> None:
        """After GradScaler.step: a step that never reached the optimizer was skipped."""
        track = self.track_for(optimizer)
        if track is not None and track.steps == steps_before:
            end = self.clock()
            self._step_seconds += end - started
            self._span(CALL_STEP, started, end)
            if self.device.on:
                self.device.close("step", self._scaler_event)
            self.calls.append(CALL_STEP)
            if track.info is None:
                self._announce(track, optimizer)
            progress = self._begin_record(track, optimizer, skipped=True)
            self._take_losses(progress)
            self._mark_consumed(track)
            self._finish_record(progress, end)
            self._overhead_after_record(end)
        self.active_scaler = None

    def _announce(self, track: OptimizerTrack, optimizer: torch.optim.Optimizer) -> None:
        held = params_of(optimizer)
        names = self.tree.names(held)
        groups = []
        position = 0
        for group in optimizer.param_groups:
            params = _gradient_holders(group["params"])
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

    def _begin_record(self, track: OptimizerTrack, optimizer: Any, skipped: bool = False) -> _StepInProgress:
        step = track.steps
        track.steps += 1
        record = StepRecord(
            optimizer=track.index,
            step=step,
            t=0.0,
            calls=[],
            backward_calls=0,
            skipped=skipped,
            loss=None,
            grad_norm=None,
            group_grad_norms=[],
            lr=[_lr(group.get("lr")) for group in optimizer.param_groups],
            time={},
        )
        progress = _StepInProgress(record=record, track=track, detail=bool(self.every) and step % self.every == 0 and not skipped)
        if capturing():  # cheap where CUDA was never initialized
            progress.captured = True
            progress.detail = False  # no snapshot, no per-parameter norms: nothing has run yet
        scaler = self.active_scaler
        if scaler is not None and not progress.captured:
            progress.loss_scale = _as_value(getattr(scaler, "_scale", None))
            progress.grad_scale = _as_value(getattr(optimizer, "grad_scale", None))  # fused optimizers
        if progress.detail:
            params = self._layout(track, optimizer).local_params()
            if sum(p.numel() for p in params) <= SNAPSHOT_MAX_NUMEL:
                progress.before = norms.snapshot(params)
        if not skipped:
            self._check_step_order(progress, optimizer)
        return progress

    @staticmethod
    def _cleared_before_step(progress: _StepInProgress) -> None:
        progress.add_ordering(
            "zero-grad-before-step",
            f"gradients were cleared after backward and before optimizer {progress.track.index}'s step {progress.record.step}",
        )

    def _take_losses(self, progress: _StepInProgress) -> None:
        """The backward passes (and their losses) that filled the gradients this step consumes."""
        track = progress.track
        mark = track.mark
        missed = [(max(first, mark + 1), last) for first, last in track.missed if last > mark]
        track.missed = []
        progress.backward_ran = self.backward_count > mark
        progress.record.backward_calls = self.backward_count - mark - _count_through(missed, self.backward_count)
        losses = self._losses
        start = bisect.bisect_right(losses, mark, key=_backward_index) if losses and losses[0][0] <= mark else 0
        if missed:
            progress.losses = [value for index, value in losses[start:] if not _within(index, missed)]
        else:
            progress.losses = [value for _, value in losses[start:]]
        dropped = self._losses_dropped_through
        if mark < dropped and dropped - mark > _count_through(missed, dropped):
            progress.losses.append(None)  # some of its losses were dropped: the sum is unknown

    def _check_step_order(self, progress: _StepInProgress, optimizer: Any) -> None:
        """The ordering rules that a step decides from what happened since the previous one."""
        track = progress.track
        step = progress.record.step
        no_backward = self.backward_count == 0 or self.backward_count <= track.last_step_backward
        if track.scheduler_ahead is not None:
            self._check_scheduler_ahead(track, step)
        if track.closure:
            pass  # the closure runs backward inside the step
        elif no_backward and ((layout := self._layout(track, optimizer)).partial or self._grads_set_by_hand(track, layout.params)):
            pass  # no backward, but gradients the previous step did not have (or some stepdbg does not read)
        elif no_backward and _shadowing_a_join():
            pass  # a rank out of inputs, stepping as Join's hooks do while the others finish
        elif no_backward:
            if track.last_step_backward < 0:
                track.step_before_backward = True
            progress.add_ordering(
                "step-without-backward", f"optimizer {track.index}'s step {step} ran with no backward since its previous step"
            )
        elif track.clear_after_backward and track.mark == self.backward_count and not self._set_since_clear(track, optimizer):
            if track.step_before_backward:
                progress.add_ordering(
                    "step-without-backward", f"optimizer {track.index} steps before backward (step {step} found its gradients cleared)"
                )
            else:
                self._cleared_before_step(progress)
        if track.discarded or track.discard_streak:
            self._check_discarded(progress, no_backward)
        if not track.closure:
            self._check_accumulated(progress)

    def _check_accumulated(self, progress: _StepInProgress) -> None:
        """missing-zero-grad: a backward added to gradients a previous step had consumed. Judged
        as the step starts, or as it ends where a closure runs backward passes inside it (LBFGS
        evaluating a closure that never clears); where only values still on a device can tell,
        once they are read back (`_complete`)."""
        track = progress.track
        if track.dirty_param is not None:
            self._missing_zero_grad(progress, track.dirty_param)
        elif track.dirty_pending:
            progress.dirty_pending = list(track.dirty_pending.items())

    @staticmethod
    def _missing_zero_grad(progress: _StepInProgress, position: int) -> None:
        names, step = progress.track.names, progress.record.step
        name = names[position] if position < len(names) else None
        progress.add_ordering(
            "missing-zero-grad",
            f"step {step} used gradients accumulated on top of those step {step - 1} had already consumed"
            + (f" (first: {name})" if name else ""),
            name,
        )

    def _check_discarded(self, progress: _StepInProgress, no_backward: bool) -> None:
        """zero_grad inside a gradient-accumulation loop: the step uses only the backward
        passes after the last clear, no more than it threw away, with at least two clears
        throwing some away, for `DISCARD_STREAK` steps in a row. Gradients set by hand after
        the last backward (gradient surgery: PCGrad) are no such step."""
        track = progress.track
        discarded, track.discarded = track.discarded, 0
        clears, track.discarding_clears = track.discarding_clears, 0
        after = track.grad_after_discard() if track.grad_after_discard is not None else None
        track.grad_after_discard = None
        sentinel = track.sentinel_param()
        kept = self.backward_count - track.mark
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
            track.discard_streak = 0
            return
        track.discard_streak += 1
        if track.discard_streak >= DISCARD_STREAK:
            step = progress.record.step
            progress.add_ordering(
                "zero-grad-before-step",
                f"optimizer {track.index}'s step {step} used only the last {kept} of {kept + discarded} backward passes"
                f" since its previous step, for {track.discard_streak} steps in a row: zero_grad() between them"
                " cleared the others unused (inside a gradient-accumulation loop?)",
            )

    def _set_since_clear(self, track: OptimizerTrack, optimizer: Any) -> bool:
        """Whether, with no backward since the last clear, the step finds gradients that hold
        values: set by hand (Reptile's meta-gradient, for all parameters or some), as a clear
        leaves None or zeros, and work in place on them (clipping, unscaling) keeps zeros.
        Runs only where zero-grad-before-step would fire; values are read on the CPU only.
        On a device: gradients back where the clear left the sentinel none, or another
        tensor there. An optimizer holding tensors stepdbg does not read has nothing to judge."""
        layout = self._layout(track, optimizer)
        if layout.partial:
            return True
        grads = [grad for param in layout.params if (grad := param.grad) is not None]
        if not grads:
            return False
        if all(grad.device.type == "cpu" for grad in grads):
            return any(norms.holding_values(grads))
        sentinel = track.sentinel_param()
        grad = sentinel.grad if sentinel is not None else None
        return grad is not None and (track.cleared_grad is None or track.cleared_grad() is not grad)

    @staticmethod
    def _grads_set_by_hand(track: OptimizerTrack, params: list[torch.Tensor]) -> bool:
        """Whether a step with no backward since its previous one finds gradients that step
        did not consume (see ``OptimizerTrack.consumed``)."""
        if track.consumed is None:
            return any(p.grad is not None for p in params)
        position, consumed, version = track.consumed
        grad = params[position].grad if position < len(params) else None
        if grad is None:
            return False
        written_since = grad._version != version
        return written_since or consumed() is not grad

    def _layout(self, track: OptimizerTrack, optimizer: Any) -> _Layout:
        previous = track.layout
        if previous is None or not previous.matches(optimizer):
            track.layout = None
            layout = _Layout.of(optimizer)
            # add_param_group (before the first step, or later: progressive unfreezing), a parameter swapped in
            if previous is not None or set(map(id, layout.params)) != track.param_ids:
                self._hold(track, layout.params)
            if previous is not None and track.info is not None:
                self._announce(track, optimizer)  # the trace gets the new groups and their names
            if self._tracks_by_optimizer.get(id(optimizer)) is track:  # `_forget_optimizer` will drop it
                track.layout = layout
            return layout
        return previous

    def _consume(self, progress: _StepInProgress, optimizer: torch.optim.Optimizer) -> None:
        """Read the gradients this step consumes: norms, and the state for the ordering rules."""
        track = progress.track
        layout = self._layout(track, optimizer)
        params = progress.params = layout.params
        grads = [grad for param in params if (grad := param.grad) is not None]
        if layout.sharded:
            grads = norms.local_shards(grads)
        if len(grads) == len(params):
            progress.present = layout.positions
        else:
            progress.present, progress.missing = [], []
            for position, param in enumerate(params):
                if param.grad is not None:
                    progress.present.append(position)
                elif param.requires_grad:
                    progress.missing.append(position)
        # No gradient at all, though a backward ran since the previous step: if it reached these
        # parameters, something cleared them since. If it never did (an alternating multi-task
        # loop steps every optimizer), the step is a no-op, not a mistake: `unused-param` names
        # parameters that stay without gradients.
        if not grads and not progress.ordering and not track.closure and track.filled_at > track.mark:
            track.mark = self.backward_count  # a clear we did not see (p.grad = None): as if we had
            self._cleared_before_step(progress)
        track.consumed = (progress.present[0], weakref.ref(grads[0]), grads[0]._version) if grads else None
        self._take_losses(progress)
        if progress.captured:
            progress.losses = []  # values of the replays to come, read at no particular one
        else:
            self._gradient_norms(progress, layout, grads)
        if progress.detail:
            self._check_not_in_optimizer(progress, layout)
        needs_snapshot = not track.cleared_since_step or track.steps == 1
        self._mark_consumed(track, params if needs_snapshot else None)

    @staticmethod
    def _gradient_norms(progress: _StepInProgress, layout: _Layout, grads: list[torch.Tensor]) -> None:
        """Queue the norms of the step's gradients (per tensor on detail steps)."""
        # torch.no_grad() without its Python context manager: a few us a step on small models
        grad_mode = torch.is_grad_enabled()
        torch._C._set_grad_enabled(False)
        try:
            if progress.detail:
                progress.grad_pieces = norms.per_tensor_norms(grads)
                progress.piece_counts = layout.group_lengths(progress.present)
            else:
                progress.grad_pieces, progress.piece_counts = layout.grad_norm_pieces(grads, progress.present)
        finally:
            torch._C._set_grad_enabled(grad_mode)

    def _check_not_in_optimizer(self, progress: _StepInProgress, layout: _Layout) -> None:
        """Gradients on a parameter no optimizer holds, where the optimizer holds a stale
        copy of the model (a layer replaced after it was built) or the parameter's siblings,
        or where the parameter was frozen at an earlier detail step (unfrozen, never added),
        or where the optimizer holds only frozen parameters (built before the model was
        frozen and given adapters, as LoRA does).

        A model trained only in part, with the rest left requiring grad (an optimizer
        given the head alone), gets gradients everywhere from the start: no mistake."""
        roots = self._roots(layout)
        optimized = self._tracks_by_param
        frozen = self._frozen_seen
        replaced: bool | None = None  # decided only once a suspect shows up
        all_frozen: bool | None = None
        for root in roots:
            for name, param in root.named_parameters():
                if not param.requires_grad:
                    frozen[param] = True
                    continue
                if id(param) in optimized or param.grad is None:
                    continue
                if param in frozen:
                    message = f"{name} was unfrozen and receives gradients, but no optimizer holds it"
                else:
                    message = f"{name} receives gradients but no optimizer holds it"
                    owner = self.tree.owner(param)
                    if owner is None or not any(id(p) in optimized for p in owner.parameters()):
                        if replaced is None:
                            replaced = self._has_orphans(progress, roots)
                            all_frozen = not any(p.requires_grad for p in progress.params)
                        if all_frozen:
                            message += f", and optimizer {progress.track.index} holds only frozen parameters"
                        elif not replaced:
                            continue  # neither its siblings nor a stale copy of it are optimized
                found = _Unheld(progress.track.index, progress.record.step, weakref.ref(param), name, message)
                self._unheld.append(found)

    def _report_unheld(self) -> None:
        """The first parameter each detail step found with gradients and no optimizer, that
        none holds yet: an optimizer built in the same iteration, after that step, owns the
        iteration's backward and its parameters (Pyro builds one per parameter, the first
        time it steps, in a set's order). Called at the next backward and at the run's end."""
        unheld, self._unheld = self._unheld, []
        reported: set[tuple[int, int]] = set()
        for entry in unheld:
            param = entry.param()
            key = (entry.optimizer, entry.step)
            if param is None or key in reported or id(param) in self._tracks_by_param:
                continue
            reported.add(key)
            self.diagnostics.report(
                "not-in-optimizer", entry.step, entry.optimizer, entry.message, entry.name, self.clock() - self.start
            )

    def _forget_unheld(self, optimizer: int, step: int) -> None:
        """What a step found before it ran backward passes of its own, and reads again at its end."""
        if self._unheld:
            self._unheld = [e for e in self._unheld if (e.optimizer, e.step) != (optimizer, step)]

    def _roots(self, layout: _Layout) -> list[torch.nn.Module]:
        """The models the optimizer's parameters belong to (a model wrapped later is still
        one of them, and everything the rule looks for lies inside it)."""
        if layout.roots is None:
            found = {id(root): root for p in layout.params if (root := self.tree.root(p)) is not None}
            layout.roots = [weakref.ref(root) for root in found.values()]
        return [root for ref in layout.roots if (root := ref()) is not None]

    @staticmethod
    def _has_orphans(progress: _StepInProgress, roots: list[torch.nn.Module]) -> bool:
        """Whether the optimizer holds parameters that are no longer part of its models."""
        current = {id(p) for root in roots for p in root.parameters()}
        return any(id(p) not in current for p in progress.params)

    def _mark_consumed(self, track: OptimizerTrack, params: list[torch.Tensor] | None = None) -> None:
        """The step consumed its gradients: what follows accumulates anew."""
        track.last_step_backward = self.backward_count
        track.mark = self.backward_count
        track.clear_after_backward = False
        track.dirty_param = None
        track.dirty_pending = None
        track.cleared_since_step = False
        if params is None:
            track.snapshot = None
            return
        entries = []
        for position, param in enumerate(params):
            grad = param.grad
            if grad is not None:
                entries.append((weakref.ref(param), weakref.ref(grad), grad._version, position))
        track.snapshot = entries
        if entries and track not in self._watched:
            self._watched.append(track)

    def _overhead_after_record(self, end: float) -> None:
        """stepdbg's time finishing the record that ended at ``end``: the next iteration's first."""
        now = self.clock()
        self._overhead += now - end
        self._span("overhead", end, now)

    def _finish_record(self, progress: _StepInProgress, end: float) -> None:
        record = progress.record
        record.t = end - self.start
        record.calls = self._compressed_calls()
        spans, self._spans = self._spans, []
        record.spans = spans if len(spans) <= 3 * HELD_SPANS else None
        total = end - (self._last_end if self._last_end is not None else end)
        self._last_end = end
        data, progress.data_startup = self.data.take()
        record.time = self._phase_times(total, data)
        if record.memory is None:  # read already where the record was made before it is finished
            record.memory = self.memory.read()
        if progress.before is not None:
            progress.update_pieces = norms.update_pieces(progress.before, norms.local_shards(progress.params))
            progress.before = None
        progress.on_device = progress.waits_on_device(self._device_losses)
        values = progress.device_values()
        if progress.on_device:
            self._on_cuda(next(v.device.index for v in values if v.is_cuda))
        if self.device.on:
            progress.device_phases = self.device.finish()
        if self._waiting or progress.on_device or progress.device_phases is not None:
            self._waiting.append((progress, _Resolved(values, progress.device_phases)))
            if not capturing():  # no event may be queried while a capture runs
                self.flush_ready()
        else:
            self._complete(progress, norms.read_floats(values))

    def _compressed_calls(self) -> list[str]:
        """This iteration's calls, compressed; loops repeat the same few sequences, so cache them."""
        key = tuple(self.calls)
        self.calls = []
        compressed = self._calls_cache.get(key)
        if compressed is None:
            if len(self._calls_cache) > 256:
                self._calls_cache.clear()
            compressed = self._calls_cache[key] = compress_calls(key)
        return list(compressed)

    def _phase_times(self, total: float, data: float) -> dict[str, float]:
        """The ``time`` of the record that ends now (``data``: its DataLoader waits); the phase
        clocks start again."""
        backward, step, zero_grad, overhead = (
            self._backward_seconds, self._step_seconds, self._zero_grad_seconds, self._overhead
        )
        forward = max(0.0, total - backward - step - zero_grad - overhead - data)
        self._backward_seconds = self._step_seconds = self._zero_grad_seconds = self._overhead = 0.0
        totals = self.totals
        totals["data"] += data
        totals["forward"] += forward
        totals["backward"] += backward
        totals["step"] += step
        totals["zero_grad"] += zero_grad
        totals["overhead"] += overhead
        return {
            "backward": backward, "step": step, "zero_grad": zero_grad, "data": data,
            "forward": forward, "overhead": overhead, "total": total,
        }

    def _retime(self, record: StepRecord, phases: DevicePhases) -> None:
        """A record of a loop on CUDA takes its phase times from the device's clock."""
        seconds = phases.seconds(record.time["overhead"])
        if seconds is None:
            return  # the host's times stay
        for phase in PHASES:
            self.totals[phase] += seconds[phase] - record.time[phase]
        record.time = seconds

    def _prune_losses(self) -> None:
        """Drop the losses every optimizer has taken; when an idle one keeps them, the oldest.
        Called as the list doubles, so that many optimizers cost no more per step than one."""
        losses = self._losses
        oldest = min((t.mark for t in self._tracks), default=self.backward_count)
        if losses[0][0] <= oldest:
            del losses[: bisect.bisect_right(losses, oldest, key=_backward_index)]
        if len(losses) >= HELD_LOSSES:
            drop = len(losses) - HELD_LOSSES // 2
            self._losses_dropped_through = losses[drop - 1][0]
            del losses[:drop]
        self._prune_at = min(max(LOSS_PRUNE_EVERY, 2 * len(losses)), HELD_LOSSES)

    def flush_ready(self, wait: bool = False) -> None:
        """Emit the records whose device values have arrived (all of them with ``wait``)."""
        while self._waiting and (wait or self._waiting[0][1].ready()):
            progress, resolved = self._waiting.popleft()
            self._complete(progress, resolved.floats())

    def _complete(self, progress: _StepInProgress, values: list[float]) -> None:
        record, track = progress.record, progress.track
        if progress.device_phases is not None:
            self._retime(record, progress.device_phases)
        grad_values, update_values, dirty_values, loss_values, scales = progress.split(values)
        if progress.dirty_pending:
            held = (position for (position, _), value in zip(progress.dirty_pending, dirty_values) if value != 0)
            if (position := next(held, None)) is not None:
                self._missing_zero_grad(progress, position)
        loss_scale = scales.pop(0) if isinstance(progress.loss_scale, torch.Tensor) else progress.loss_scale
        grad_scale = scales.pop(0) if isinstance(progress.grad_scale, torch.Tensor) else progress.grad_scale
        grad_divisor = grad_scale or 1.0
        names = track.names
        record.loss = _sum_losses(progress.losses, loss_values, loss_scale or 1.0)
        param_norms: list[float | None] | None = None
        if record.skipped or progress.captured:
            record.group_grad_norms = [None] * len(record.lr)
        elif len(grad_values) == 1 and len(progress.piece_counts) == 1:
            record.grad_norm = grad_values[0] / grad_divisor  # one group, one piece: the common case
            record.group_grad_norms = [record.grad_norm]
        else:
            record.group_grad_norms = [
                n / grad_divisor if n is not None else None for n in norms.combine(grad_values, progress.piece_counts)
            ]
            record.grad_norm = norms.total(record.group_grad_norms)
        if progress.detail:
            param_norms = [None] * len(names)
            for position, value in zip(progress.present, grad_values):
                if position < len(names):
                    param_norms[position] = value / grad_divisor
            record.param_grad_norms = {n: v for n, v in zip(names, param_norms) if v is not None}
            count = len(update_values) // 2
            deltas, sizes = update_values[:count], update_values[count:]
            record.param_update_ratios = {n: (d / s if s else None) for n, d, s in zip(names, deltas, sizes)}
            total_size = norms.total(sizes)
            total_delta = norms.total(deltas)
            record.update_ratio = total_delta / total_size if total_size and total_delta is not None else None
        if record.optimizer is None:
            record.group_grad_norms = []  # no param groups without an optimizer (and `lr` is empty too)
        for rule, message, param in progress.ordering or ():
            self.diagnostics.report(rule, record.step, record.optimizer, message, param, record.t)
        self.records += 1
        self._emit_step(record)
        self.diagnostics.check_step(
            record, names, param_norms, progress.missing, lambda: self._first_nonfinite_grad(progress, names),
            backward_ran=progress.backward_ran,
        )
        self.diagnostics.check_run(record, data_startup=progress.data_startup, loader=self.data.loader)

    @staticmethod
    def _first_nonfinite_grad(progress: _StepInProgress, names: list[str]) -> str | None:
        """The first parameter whose gradient holds NaN or Inf (CPU only: it reads values now).

        Called only when an optimizer's first `nonfinite` is reported, so the
        per-tensor loop costs nothing in a healthy run.
        """
        params = progress.params[: len(names)]
        if not params or params[0].is_cuda:
            return None
        with torch.no_grad():
            for name, param in zip(names, params):
                grad = param.grad
                if grad is not None and not bool(torch.isfinite(norms.local_shards([grad])[0]).all()):
                    return name
        return None

    def _no_optimizer_step(self) -> None:
        """A loop with no optimizer: each backward pass is one iteration. Its norms are taken
        now; its record is finished at the next instrumented call (`_loop_started`, or a
        DataLoader fetch), unless an optimizer is built before then, which owns the backward
        (`on_optimizer_created`)."""
        end = self.clock()
        record = StepRecord(
            optimizer=None, step=0, t=0.0, calls=[], backward_calls=1,
            skipped=False, loss=None, grad_norm=None, group_grad_norms=[], lr=[], time={},
        )
        record.memory = self.memory.read()
        progress = _StepInProgress(record=record, track=self._manual, detail=False)
        grads = [grad for ref in self._manual_leaves if (leaf := ref()) is not None and (grad := leaf.grad) is not None]
        if capturing():  # see `_StepInProgress.captured`
            progress.captured = True
        elif grads:
            with torch.no_grad():
                progress.grad_pieces, progress.piece_counts = norms.group_norm_pieces([grads])
        self._unowned = (progress, end)

    def _finish_unowned(self) -> None:
        """The record of the last backward made with no optimizer, none having been built since:
        no instrumented call (nor DataLoader fetch) ran since either, so its calls, host times
        and memory are as they were when it ended (on CUDA, its device times end at this
        call's event)."""
        progress, end = self._unowned  # type: ignore[misc]
        self._unowned = None
        progress.record.step = self.no_optimizer_steps
        self.no_optimizer_steps += 1
        progress.losses = [] if progress.captured else [value for _, value in self._losses]
        self._losses = []
        self._finish_record(progress, end)

    def finish(self) -> None:
        """The run is over: emit every record still waiting (on the device, or for an optimizer
        to be built) and every parameter found outside all optimizers."""
        if self._unowned is not None:
            self._finish_unowned()
        if self._unheld:
            self._report_unheld()
        self.flush_ready(wait=True)


def _count_through(runs: list[tuple[int, int]], through: int) -> int:
    """How many indices of ``runs`` (``(first, last)``) are at most ``through``."""
    return sum(min(last, through) - first + 1 for first, last in runs if first <= through)


def _within(index: int, runs: list[tuple[int, int]]) -> bool:
    """Whether ``index`` lies in one of ``runs`` (``(first, last)``, in order)."""
    at = bisect.bisect_right(runs, index, key=operator.itemgetter(0)) - 1
    return at >= 0 and index <= runs[at][1]


def _grad_state(param_ref: weakref.ref | None) -> tuple[int, int, int] | None:
    """A parameter's gradient as id and version, holding no reference to it (a held gradient
    would make the next backward add out of place, into a new tensor)."""
    param = param_ref() if param_ref is not None else None
    grad = param.grad if param is not None else None
    if grad is None:
        return None
    local = getattr(grad, "_local_tensor", None)  # FSDP2 accumulates into a DTensor's shard
    return (id(grad), grad._version, local._version if local is not None else 0)


def _backward_index(loss: tuple[int, Any]) -> int:
    return loss[0]


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _callers() -> Iterator[types.FrameType]:
    """The frames on the stack, innermost first, stepdbg's own included (for rare paths only)."""
    frame: types.FrameType | None = sys._getframe(1)
    while frame is not None:
        yield frame
        frame = frame.f_back


def _optimizers_stepping() -> set[int]:
    """``id``s of the optimizers whose ``step`` is on the stack (a rare path: see
    `Collector._abandon_steps_that_raised`)."""
    return {
        id(frame.f_locals.get("self"))
        for frame in _callers()
        if frame.f_code.co_name == "step" and "self" in frame.f_code.co_varnames
    }


_JOIN_MODULE = os.path.join("distributed", "algorithms", "join.py")


def _shadowing_a_join() -> bool:
    """Whether this runs inside torch.distributed's ``Join`` as it shadows the ranks still
    training (uneven inputs): a rank out of inputs steps its ZeroRedundancyOptimizer on the
    gradients it has, by design. Walks the stack: only where step-without-backward would fire."""
    return any(
        frame.f_code.co_name == "__exit__" and frame.f_code.co_filename.endswith(_JOIN_MODULE) for frame in _callers()
    )


def _stepped_here(scheduler: Any) -> bool:
    """Whether the scheduler's count moved by a step rather than a checkpoint loaded into it.

    A step sets each group's lr and keeps those very float objects as its last lrs; a
    ``load_state_dict`` brings last lrs of its own (a resumed run, before its new
    optimizer's first step, moves the count by one too when saved after one step).
    Tensor lrs are copied by a step: those count as steps.
    """
    last, optimizer = getattr(scheduler, "_last_lr", None), getattr(scheduler, "optimizer", None)
    if type(last) is not list or optimizer is None or not all(type(lr) is float for lr in last):
        return True
    return all(lr is group.get("lr") for lr, group in zip(last, optimizer.param_groups))


def _scheduler_state(scheduler: Any) -> tuple[int, int]:
    """What a step changes: the scheduler's step count, and ``id`` of its last lrs (a new list
    at each step, also of schedulers whose ``step`` keeps no count; no reference held)."""
    count = getattr(scheduler, "_step_count", None)
    if not isinstance(count, int):
        count = int(getattr(scheduler, "last_epoch", 0))
    return count, id(getattr(scheduler, "_last_lr", None))


def _lr(value: Any) -> float | None:
    if isinstance(value, torch.Tensor):
        return float(value.detach()) if not value.is_cuda and value.numel() == 1 else None  # a learned lr requires grad
    return float(value) if isinstance(value, (int, float)) else None


def _loss_value(outputs: Sequence[Any]) -> Any:
    """The backpropagated scalar (a float on CPU, a detached 0-d tensor on a device), or None."""
    if not isinstance(outputs, (tuple, list)):
        return None  # an iterable we must not consume
    if len(outputs) != 1:
        values = [_loss_value([o]) for o in outputs]
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


def _as_value(scale: Any) -> Any:
    """A GradScaler scale as a float on the CPU, a device tensor on CUDA, or None."""
    if scale is None:
        return None
    if isinstance(scale, torch.Tensor):
        return scale.detach() if scale.is_cuda else float(scale)
    return float(scale)


def _sum_losses(pieces: list[Any], tensor_values: list[float], divisor: float) -> float | None:
    if len(pieces) == 1 and type(pieces[0]) is float:
        return pieces[0] / divisor
    if not pieces or any(p is None for p in pieces):
        return None
    values = iter(tensor_values)
    total = math.fsum(next(values) if isinstance(p, torch.Tensor) else p for p in pieces)
    return total / divisor

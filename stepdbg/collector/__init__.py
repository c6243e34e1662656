"""From instrumentation events to per-step records, and to the facts the rules judge.

`instrument` calls the ``on_*`` methods of `Collector`, a thin layer over one module
per concern:

- `optimizers`: the optimizers alive, the parameters each holds (`layout`: as a step
  reads them);
- `gradients`: what each optimizer's gradients went through (consumed, filled,
  cleared, when), and `step_order`: what a step makes of it (`stepdbg.facts`);
- `phases`: seconds per phase (the DataLoader waits of ``data`` among them) and the
  calls of each iteration;
- `losses`: the loss of each backward pass, until a step takes it;
- `schedulers`: lr schedulers, polled; `unoptimized`: gradients no optimizer applies;
- `records`: each step's record (`progress`: one being built), read back from a
  CUDA device by `readback`; `no_optimizer`: loops that build no optimizer.

On CUDA, values are copied to the host asynchronously and read once an event
says they are ready (usually at the next step); nothing here syncs the device.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..diagnostics import Diagnostics
from ..memory import MemoryGauge
from ..names import ModuleTree
from ..schema import CALL_GRAD, CALL_STEP, CALL_ZERO_GRAD, OptimizerInfo, StepRecord
from .gradients import GradientWatch
from .layout import first_param, params_of
from .losses import LossBook, loss_value
from .no_optimizer import NoOptimizerLoop
from .optimizers import OptimizerRegistry, OptimizerTrack
from .phases import CallLog, PhaseClock
from .records import StepRecords
from .schedulers import SchedulerWatch
from .stack import optimizers_stepping
from .step_order import StepOrder
from .unoptimized import UnoptimizedParams


class Collector:
    """Receives instrumentation events; emits step records, and facts for the rules."""

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
        self.clock = clock
        self.start = clock()
        self.diagnostics = diagnostics
        self.phases = PhaseClock(clock, make_event)
        self.memory = memory if memory is not None else MemoryGauge()
        """Read at each step's end (`Instrumentation` opens and closes it)."""
        self.log = CallLog()
        self.losses = LossBook()
        self.optimizers = OptimizerRegistry(tree, emit_optimizer, forget=self._forget)
        self.gradients = GradientWatch(self.optimizers)
        self.schedulers = SchedulerWatch(self.track_for, self.log, self.gradients, self._judge_now)
        self.records = StepRecords(
            every, emit_step, diagnostics, self.start, self.optimizers, self.gradients,
            StepOrder(self.gradients, self.optimizers, self.schedulers), self.losses, self.phases, self.log,
            UnoptimizedParams(tree, self.optimizers, self._judge_now), self.memory, self._on_cuda,
        )
        self.no_optimizer = NoOptimizerLoop(self.losses)
        # the calls in progress
        self._zero_grad_depth = 0
        self._backward_depth = 0
        self._stepping: OptimizerTrack | None = None
        """The optimizer whose step is running (the outermost, where one steps another)."""
        self.active_scaler: Any = None
        """The GradScaler whose ``step`` is running."""

    def _forget(self, track: OptimizerTrack) -> None:
        self.gradients.forget(track)

    def _judge_now(self, fact: object) -> bool:
        return self.diagnostics.judge(fact, self.clock() - self.start)

    def _on_cuda(self, index: int | None) -> None:
        """The loop's values are on CUDA device ``index``: time it with events, and read that
        device's allocator for the step's memory."""
        self.phases.device.start_timing(index)
        self.memory.watch_cuda(index)

    def _loop_started(self) -> float:
        """Now, with the scheduler steps since the previous call noticed; the first call also
        starts the first iteration's clock (set-up is not a step)."""
        if self.schedulers.entries:
            self.schedulers.poll()
        return self.phases.now()

    def finish(self) -> None:
        """The run is over: emit every record still waiting on the device."""
        self.records.readback.flush(wait=True)

    # ---- DataLoader fetches ---------------------------------------------------------------

    def on_fetch_start(self, iterator: Any) -> float | None:
        """A DataLoader iterator's ``__next__`` begins: when (None: inside another fetch)."""
        return self.phases.fetch_started(iterator)

    def on_fetch_end(self, started: float, fetched: bool) -> None:
        self.phases.fetch_ended(started, fetched)

    # ---- optimizers -------------------------------------------------------------------

    def on_optimizer_created(self, optimizer: torch.optim.Optimizer) -> None:
        self.gradients.optimizer_added(self.optimizers.add(optimizer))

    def track_for(self, optimizer: Any) -> OptimizerTrack | None:
        """The track of an optimizer (even once all its parameters were replaced), or of a
        wrapper around one, found by its first parameter; one built before stepdbg started
        gets its track now."""
        optimizers = self.optimizers
        track = optimizers.by_optimizer.get(id(optimizer))
        if track is not None:
            return track
        first = first_param(optimizer)
        if first is None:
            return None
        track = optimizers.by_param.get(id(first))
        if track is None and hasattr(optimizer, "param_groups"):
            self.on_optimizer_created(optimizer)  # built before stepdbg started
            track = optimizers.by_param.get(id(first))
        return track

    # ---- zero_grad ----------------------------------------------------------------------

    def on_zero_grad_start(self) -> bool:
        """Returns whether this is the outermost clearing call (nested ones are not counted)."""
        self._zero_grad_depth += 1
        if self._zero_grad_depth > 1:
            return False
        self.phases.zero_grad_started(self._loop_started())
        self.log.append(CALL_ZERO_GRAD)
        return True

    def on_zero_grad_end(self, cleared: list[torch.Tensor] | None, optimizer: Any = None) -> None:
        self._zero_grad_depth -= 1
        if self._zero_grad_depth > 0:
            return
        end = self.phases.zero_grad_ended()
        if optimizer is not None:
            track = self.track_for(optimizer)
            if track is not None:
                self.gradients.cleared(track)
                if track.sharing:
                    self.gradients.cleared_params(params_of(optimizer), besides=track)
        elif cleared is not None:
            self.gradients.cleared_params(cleared)
        self.phases.overhead += self.clock() - end

    # ---- backward -----------------------------------------------------------------------

    def on_backward_start(self, outputs: Sequence[Any], accumulate: bool) -> bool:
        """Returns whether this is an outermost backward (nested ones are part of it)."""
        self._backward_depth += 1
        if self._backward_depth > 1:
            return False
        entered = self._loop_started()
        if not accumulate:
            self.log.append(CALL_GRAD)
        else:
            if self._stepping is not None and not self._stepping.closure:
                self._abandon_steps_that_raised()
            loss = loss_value(outputs)
            if isinstance(loss, torch.Tensor):
                self.losses.on_device = True
                self._on_cuda(loss.device.index)
            if self.gradients.backward_starting():
                self.log.append(CALL_ZERO_GRAD)  # a clear no call showed (p.grad = None)
            if self.optimizers.created == 0:
                self.no_optimizer.backward_starting(outputs)
            self.log.append_backward()
            self.losses.add(self.gradients.backward_count, loss, self.optimizers.tracks)
        self.phases.overhead += self.clock() - entered
        self.phases.backward_started()
        return True

    def on_backward_end(self, accumulate: bool) -> None:
        self._backward_depth -= 1
        if self._backward_depth > 0:
            return
        end = self.phases.backward_ended()
        if accumulate:
            self.gradients.backward_ended()
            if self.optimizers.created == 0:
                now = self.clock()
                self.records.finish(self.no_optimizer.step(), now)
        self.phases.overhead += self.clock() - end

    # ---- lr schedulers ------------------------------------------------------------------

    def on_scheduler_created(self, scheduler: Any) -> None:
        self.schedulers.created(scheduler)

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
            self.gradients.consumed(track)
            return
        self._stepping = track
        track.stepping_id = id(optimizer)
        entered = self._loop_started()
        self.log.append(CALL_STEP)
        if track.info is None:
            self.optimizers.announce(track, optimizer)
        closure = args[1] if len(args) > 1 else kwargs.get("closure")
        track.closure = closure is not None
        progress = track.pending = self.records.begin(track, optimizer, self.active_scaler)
        if not track.closure:
            self.records.consume(progress, optimizer)
        self.phases.step_started(track.timer, entered)

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
        end = self.phases.step_ended(track.timer)
        progress, track.pending = track.pending, None
        sentinel = track.sentinel_param()
        state = track.state
        state.param_version = sentinel._version if sentinel is not None else None
        state.backward_at_step_end = self.gradients.backward_count
        if track.closure:
            self.records.consume(progress, optimizer)
        self.records.finish(progress, end)
        self.phases.overhead_after_record(end)

    def on_scaler_step_start(self, scaler: Any, optimizer: Any) -> int:
        """Before GradScaler.step: returns the optimizer's step count, to see if it stepped."""
        self.active_scaler = scaler
        self.phases.scaler_step_started()
        track = self.track_for(optimizer)
        return track.steps if track is not None else -1

    def on_scaler_step_end(self, optimizer: Any, steps_before: int, started: float) -> None:
        """After GradScaler.step: a step that never reached the optimizer was skipped."""
        track = self.track_for(optimizer)
        if track is not None and track.steps == steps_before:
            end = self.phases.scaler_step_skipped(started)
            self.log.append(CALL_STEP)
            if track.info is None:
                self.optimizers.announce(track, optimizer)
            progress = self.records.begin(track, optimizer, self.active_scaler, skipped=True)
            self.losses.take(progress, self.gradients.backward_count)
            self.gradients.consumed(track)
            self.records.finish(progress, end)
            self.phases.overhead_after_record(end)
        self.active_scaler = None

    def _abandon_steps_that_raised(self) -> None:
        """Steps with no closure that a backward, or an unrelated step, finds still running, and
        whose ``step`` is no longer on the stack, raised (the script caught it: an out-of-memory
        fallback): PyTorch ran no post-hook. Their records are dropped, and those optimizers
        step anew. One still on the stack runs a backward itself (a curvature estimate)."""
        running = optimizers_stepping()
        for track in self.optimizers.tracks:
            if track.depth and not track.closure and track.stepping_id not in running:
                if track.pending is not None:
                    track.steps -= 1  # the count is of steps made
                track.depth = 0
                track.pending = None
                if self._stepping is track:
                    self._stepping = None

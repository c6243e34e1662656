"""From instrumentation events to per-step records, and to the facts the rules judge.

`instrument` calls the ``on_*`` methods of `Collector`, a thin layer over one module
per concern:

- `optimizers`: the optimizers alive, the parameters each holds (`layout`: as a step
  reads them);
- `gradients`: what each optimizer's gradients went through (consumed, filled,
  cleared, when), and `step_order`: what a step makes of it (`stepdbg.facts`);
- `stepping`: the steps as they run (nested, wrapped, skipped, raised, running backward
  passes of their own);
- `phases`: seconds per phase (the DataLoader waits of ``data`` among them), where each
  call lay, and the calls of each iteration;
- `losses`: the loss of each backward pass, until a step takes it;
- `schedulers`: lr schedulers, polled; `unoptimized`: gradients no optimizer applies;
- `records`: each step's record (`progress`: one being built), read back from a
  CUDA device by `readback`; `no_optimizer`: loops that build no optimizer.

Gradient state, not call patterns, decides the ordering rules: see `gradients` and
docs/gradient-state.md. On CUDA, values are copied to the host asynchronously and read
once an event says they are ready (usually at the next step); nothing here syncs the
device.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..diagnostics import Diagnostics
from ..memory import MemoryGauge
from ..module_tree import ModuleTree
from ..schema import CALL_GRAD, CALL_ZERO_GRAD, OptimizerInfo, StepRecord
from .gradients import GradientWatch
from .layout import first_param, params_of
from .losses import LossBook, loss_value
from .no_optimizer import NoOptimizerLoop
from .optimizers import OptimizerRegistry, OptimizerTrack
from .phases import CallLog, PhaseClock
from .records import StepRecords
from .schedulers import SchedulerWatch
from .step_order import StepOrder
from .stepping import Stepping
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
        log = CallLog()
        losses = LossBook()
        self.losses = losses
        self.optimizers = OptimizerRegistry(tree, emit_optimizer, forget=self._forget)
        self.gradients = GradientWatch(self.optimizers)
        self.schedulers = SchedulerWatch(self.track_for, log, self.gradients, self._judge_now)
        self.unoptimized = UnoptimizedParams(tree, self.optimizers, diagnostics, self._since_start)
        self.records = StepRecords(
            every,
            emit_step,
            diagnostics,
            self.start,
            self.optimizers,
            self.gradients,
            StepOrder(self.gradients, self.optimizers, self.schedulers),
            losses,
            self.phases,
            log,
            self.unoptimized,
            self.memory,
            self._on_cuda,
        )
        self.stepping = Stepping(
            self.optimizers, self.gradients, self.records, self.phases, log, losses, self.unoptimized
        )
        self.no_optimizer = NoOptimizerLoop(losses, self.memory)
        self.log = log
        # the calls in progress
        self._zero_grad_depth = 0
        self._backward_depth = 0

    def _forget(self, track: OptimizerTrack) -> None:
        self.gradients.forget(track)

    def _since_start(self) -> float:
        return self.clock() - self.start

    def _judge_now(self, fact: object) -> bool:
        return self.diagnostics.judge(fact, self.clock() - self.start)

    def _on_cuda(self, index: int | None) -> None:
        """The loop's values are on CUDA device ``index``: time it with events, and read that
        device's allocator for the step's memory."""
        self.phases.device.start_timing(index)
        self.memory.watch_cuda(index)

    def _loop_started(self) -> None:
        """The last backward made with no optimizer recorded and the scheduler steps since the
        previous call noticed, as a call begins: stepdbg's time, counted from the hook's
        ``self.phases.now()`` before it (which also starts the first iteration's clock)."""
        if self.no_optimizer.unowned is not None:
            self._finish_unowned()
        if self.schedulers.entries:
            self.schedulers.poll()

    def _finish_unowned(self) -> None:
        """The record of the last backward made with no optimizer, none having been built since."""
        progress, end = self.no_optimizer.take()
        self.records.finish(progress, end)

    def finish(self) -> None:
        """The run is over: emit every record still waiting (on the device, or for an optimizer
        to be built) and every parameter found outside all optimizers."""
        if self.no_optimizer.unowned is not None:
            self._finish_unowned()
        if self.unoptimized.unheld:
            self.unoptimized.report()
        self.records.readback.flush(wait=True)

    # ---- DataLoader fetches ---------------------------------------------------------------

    def on_fetch_start(self, iterator: Any) -> float | None:
        """A DataLoader iterator's ``__next__`` begins: when (None: inside another fetch)."""
        if self.no_optimizer.unowned is not None and threading.get_ident() == self.phases.data.thread:
            self._finish_unowned()  # the loop's next iteration begins with this fetch
        return self.phases.fetch_started(iterator)

    def on_fetch_end(self, started: float, fetched: bool) -> None:
        self.phases.fetch_ended(started, fetched)

    # ---- optimizers -------------------------------------------------------------------

    def on_optimizer_created(self, optimizer: torch.optim.Optimizer) -> None:
        self.no_optimizer.unowned = None  # built during the iteration of a backward made with none: it owns it
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
        entered = self.phases.now()
        self._loop_started()
        self.log.append(CALL_ZERO_GRAD)
        now = self.clock()
        self.phases.overhead += now - entered
        self.phases.zero_grad_started(now)
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
        entered = self.phases.now()
        self._loop_started()
        if not accumulate:
            self.log.append(CALL_GRAD)
        else:
            self.stepping.backward_starting()
            if self.unoptimized.unheld and self.stepping.running is None:
                self.unoptimized.report()
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
            if self.stepping.running is not None:
                self.stepping.backward_ended()
            if self.optimizers.created == 0:
                self.no_optimizer.backward_ended(self.clock())
        self.phases.overhead += self.clock() - end

    # ---- lr schedulers ------------------------------------------------------------------

    def on_scheduler_created(self, scheduler: Any) -> None:
        self.schedulers.created(scheduler)

    # ---- optimizer steps ----------------------------------------------------------------

    def on_step_start(self, optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        entered = self.phases.now()
        track = self.track_for(optimizer)
        if track is not None and self.stepping.begins(track, optimizer):
            self._loop_started()
            self.stepping.start(track, optimizer, args, kwargs, entered)

    def on_step_end(self, optimizer: torch.optim.Optimizer) -> None:
        track = self.track_for(optimizer)
        if track is not None:
            self.stepping.end(track, optimizer)

    def on_scaler_step_start(self, scaler: Any, optimizer: Any) -> int:
        """Before GradScaler.step: returns the optimizer's step count, to see if it stepped."""
        return self.stepping.scaler_started(scaler, self.track_for(optimizer))

    def on_scaler_step_end(self, optimizer: Any, steps_before: int, started: float) -> None:
        """After GradScaler.step: a step that never reached the optimizer was skipped."""
        self.stepping.scaler_ended(self.track_for(optimizer), optimizer, steps_before, started)

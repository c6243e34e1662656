"""Optimizer steps as they run: the one running (the outermost, where one steps another),
a subclass's step calling its parent's, a wrapped optimizer's step inside its wrapper's,
steps GradScaler skipped, steps that raised, and steps that run backward passes of
their own (with a closure, or without one: GSAM, a curvature estimate)."""

from __future__ import annotations

import weakref
from typing import Any

from ..facts import AccumulatedOnConsumed
from ..schema import CALL_STEP
from .gradients import GradientWatch
from .losses import LossBook
from .optimizers import OptimizerRegistry, OptimizerTrack
from .phases import CallLog, PhaseClock
from .progress import StepInProgress
from .records import StepRecords
from .stack import optimizers_stepping
from .step_order import check_accumulated
from .unoptimized import UnoptimizedParams


class Stepping:
    """Starts and ends each optimizer step's record."""

    def __init__(
        self,
        optimizers: OptimizerRegistry,
        gradients: GradientWatch,
        records: StepRecords,
        phases: PhaseClock,
        log: CallLog,
        losses: LossBook,
        unoptimized: UnoptimizedParams,
    ) -> None:
        self._optimizers = optimizers
        self._gradients = gradients
        self._records = records
        self._phases = phases
        self._log = log
        self._losses = losses
        self._unoptimized = unoptimized
        self.running: OptimizerTrack | None = None
        """The optimizer whose step is running (the outermost, where one steps another)."""
        self.scaler: Any = None
        """The GradScaler whose ``step`` is running."""

    def begins(self, track: OptimizerTrack, optimizer: Any) -> bool:
        """``track``'s step is called: whether it is one of its own, to record (not a nested call,
        nor a wrapped optimizer's step inside its wrapper's)."""
        outer = self.running
        if outer is not None and outer is not track and not outer.closure and not track.param_ids <= outer.param_ids:
            self.abandon_steps_that_raised()  # an unrelated step cannot run inside a closure-less one
            outer = self.running
        track.depth += 1
        if track.depth > 1:
            return False  # a subclass's step calling super().step()
        if outer is not None and outer is not track and track.param_ids <= outer.param_ids:
            # a wrapped optimizer's step (SAM, Lookahead, ZeroRedundancyOptimizer): part of the
            # wrapper's record; it has stepped all the same (for its lr scheduler's order)
            track.pending = None
            track.steps += 1
            self._gradients.consumed(track)
            return False
        self.running = track
        track.stepping_id = id(optimizer)
        return True

    def start(self, track: OptimizerTrack, optimizer: Any, args: tuple, kwargs: dict, entered: float) -> None:
        """A step of its own begins (stepdbg's work on it since ``entered``): its record, and,
        without a closure, the gradients it consumes."""
        self._log.append(CALL_STEP)
        if track.info is None:
            self._optimizers.announce(track, optimizer)
        closure = args[1] if len(args) > 1 else kwargs.get("closure")
        track.closure = closure is not None
        progress = track.pending = self._records.begin(track, optimizer, self.scaler)
        if not track.closure:
            self._records.consume(progress, optimizer, beside=self.scaler is None)
        self._phases.step_started(track.timer, entered)

    def end(self, track: OptimizerTrack, optimizer: Any) -> None:
        """``track``'s step returned."""
        if track.depth == 0:
            return
        track.depth -= 1
        if track.depth > 0:
            return
        if self.running is track:
            self.running = None
        if track.pending is None:
            return
        end = self._phases.step_ended(track.timer)
        progress, track.pending = track.pending, None
        sentinel = track.sentinel_param()
        state = track.state
        state.param_version = sentinel._version if sentinel is not None else None
        state.backward_at_step_end = self._gradients.backward_count
        if track.closure:
            check_accumulated(progress)
            self._records.consume(progress, optimizer)
        elif progress.inside:
            self._end_with_backward_inside(progress, optimizer)
        self._records.finish(progress, end)
        self._phases.overhead_after_record(end)

    def scaler_started(self, scaler: Any, track: OptimizerTrack | None) -> int:
        """Before GradScaler.step: the optimizer's step count, to see if it stepped."""
        self.scaler = scaler
        self._phases.scaler_step_started()
        return track.steps if track is not None else -1

    def scaler_ended(self, track: OptimizerTrack | None, optimizer: Any, steps_before: int, started: float) -> None:
        """After GradScaler.step: a step that never reached the optimizer was skipped."""
        if track is not None and track.steps == steps_before:
            end = self._phases.scaler_step_skipped(started)
            self._log.append(CALL_STEP)
            if track.info is None:
                self._optimizers.announce(track, optimizer)
            progress = self._records.begin(track, optimizer, self.scaler, skipped=True)
            self._losses.take(progress, self._gradients.backward_count)
            self._gradients.consumed(track)
            self._records.finish(progress, end)
            self._phases.overhead_after_record(end)
        self.scaler = None

    def backward_starting(self) -> None:
        """A backward that accumulates starts while a step without a closure runs: that step
        raised, or runs backward passes of its own."""
        running = self.running
        if running is not None and not running.closure:
            self.abandon_steps_that_raised()
            running = self.running
            if running is not None:
                _backward_inside(running)

    def backward_ended(self) -> None:
        """A backward that accumulates ended: inside the running step, the gradient it left
        (weakly: see `gradients._grad_state`)."""
        running = self.running
        progress = running.pending if running is not None else None
        if progress is not None and progress.inside:
            sentinel = progress.track.sentinel_param()
            grad = sentinel.grad if sentinel is not None else None
            progress.filled_inside = weakref.ref(grad) if grad is not None else None

    def abandon_steps_that_raised(self) -> None:
        """Steps with no closure that a backward, or an unrelated step, finds still running, and
        whose ``step`` is no longer on the stack, raised (the script caught it: an out-of-memory
        fallback): PyTorch ran no post-hook. Their records are dropped, and those optimizers
        step anew. One still on the stack runs a backward itself (a curvature estimate)."""
        running = optimizers_stepping()
        for track in self._optimizers.tracks:
            if track.depth and not track.closure and track.stepping_id not in running:
                if track.pending is not None:
                    track.steps -= 1  # the count is of steps made
                track.depth = 0
                track.pending = None
                if self.running is track:
                    self.running = None

    def _end_with_backward_inside(self, progress: StepInProgress, optimizer: Any) -> None:
        """The end of a step that ran backward passes of its own, without a closure argument.

        Where it ends on the gradient tensors they left, it is read again now, as a step with
        a closure is: their count, their loss and the gradients' norms are its own (what its
        start found and read was about gradients it did not step on, but for backward passes
        accumulated into stale gradients that nothing cleared inside). Where it ends on others
        (a curvature estimate that puts back the gradients it started with), its start's
        reading stands. Either way its passes are no one else's: what follows accumulates anew.
        """
        track = progress.track
        state = track.state
        layout = self._optimizers.layout(track, optimizer)
        filled = progress.filled_inside() if progress.filled_inside is not None else None
        sentinel = track.sentinel_param()
        if filled is None or sentinel is None or sentinel.grad is not filled:
            self._gradients.consumed(track, layout.params)
            return
        cleared_inside = state.cleared_since_step
        if progress.facts is not None:  # what its start found stands only for gradients piled on stale ones
            kept: list[object] = [f for f in progress.facts if isinstance(f, AccumulatedOnConsumed)]
            progress.facts = kept if kept and not cleared_inside else None
        if progress.record.step == 0:
            state.step_before_backward = False  # its first step found no gradient, and made them
        losses, backward_calls = ([], 0) if cleared_inside else (progress.losses, progress.record.backward_calls)
        self._unoptimized.forget(track.index, progress.record.step)
        track.closure = True
        self._records.consume(progress, optimizer)
        progress.losses = [*losses, *progress.losses]
        progress.record.backward_calls += backward_calls


def _backward_inside(track: OptimizerTrack) -> None:
    """A backward starts inside ``track``'s running step, which has no closure argument
    (GSAM's ``step()`` runs two forward and backward passes itself; a curvature estimate
    backpropagates once more). The gradients its start read are not consumed yet: its own
    passes may add to them, and the step decides at its end what it stepped on."""
    progress = track.pending
    if progress is None or progress.inside:
        return
    progress.inside = True
    track.state.snapshot = None

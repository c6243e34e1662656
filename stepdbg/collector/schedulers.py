"""lr schedulers, polled: their steps are noticed from their state at the next instrumented
call (no stepdbg frame stands between the user's code and ``scheduler.step()``), put in the
call log, and checked against their optimizer's gradients (`SchedulerAhead`)."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..facts import SchedulerAhead
from ..schema import CALL_SCHEDULER
from .gradients import GradientWatch
from .phases import CallLog

if TYPE_CHECKING:
    from .optimizers import OptimizerTrack


class SchedulerWatch:
    """The schedulers alive, each with its step count and ``id`` of its last lrs when last seen."""

    def __init__(
        self,
        track_for: Callable[[Any], OptimizerTrack | None],
        log: CallLog,
        gradients: GradientWatch,
        judge_now: Callable[[object], bool],
    ) -> None:
        self._track_for = track_for
        self._log = log
        self._gradients = gradients
        self._judge_now = judge_now
        self.entries: list[list[Any]] = []
        """[weak scheduler, its step count and ``id`` of its last lrs when last seen]"""

    def created(self, scheduler: Any) -> None:
        """A scheduler to poll. One made of others (SequentialLR, ChainedScheduler) comes first,
        so that a step is put down to it, by name."""
        state = _scheduler_state(scheduler)
        for entry in self.entries:
            if entry[0]() is scheduler:  # SequentialLR runs its first child's initial step again
                entry[1:] = state
                return
        entry = [weakref.ref(scheduler), *state]
        if hasattr(scheduler, "_schedulers"):
            self.entries.insert(0, entry)
        else:
            self.entries.append(entry)

    def poll(self) -> None:
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
        for entry in self.entries:
            scheduler = entry[0]()
            if scheduler is None:
                collected = True
                continue
            if (
                getattr(scheduler, "_step_count", None) == entry[1]
                and id(getattr(scheduler, "_last_lr", None)) == entry[2]
            ):
                continue  # not stepped: `_scheduler_state`'s test, inline (this runs at every instrumented call)
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
            self.entries = [entry for entry in self.entries if entry[0]() is not None]
        if stepped is None:
            return
        seen: set[int] = set()
        for scheduler, times in stepped:
            track = self._track_for(getattr(scheduler, "optimizer", None))
            if id(track) in seen:
                continue  # a chained scheduler steps its children too: one call
            seen.add(id(track))
            self._log.extend([CALL_SCHEDULER] * times)
            if track is not None:
                self._check_order(track, scheduler)

    def _check_order(self, track: OptimizerTrack, scheduler: Any) -> None:
        """A scheduler stepped before its optimizer ever did (but for a resumed optimizer,
        its state loaded, fast-forwarding a new scheduler), or between a backward and the
        step that uses its gradients: that is decided at the step (`step_came`), since a
        per-epoch scheduler may step while gradients of an unfinished accumulation wait,
        and they carry on into the next epoch or are cleared."""
        name = type(scheduler).__name__
        state = track.state
        count = self._gradients.backward_count
        optimizer = getattr(scheduler, "optimizer", None)
        if track.steps == 0 and _stepped_here(scheduler) and not getattr(optimizer, "state", None):
            self._judge_now(SchedulerAhead(track.index, 0, name))
        elif state.cleared_since_step and count > state.mark:
            state.scheduler_ahead = (name, count)

    def step_came(self, track: OptimizerTrack, step: int) -> None:
        """Step ``step`` after a scheduler stepped over waiting gradients: a misplaced
        scheduler if no backward ran since, so that this step uses those very gradients."""
        name, at = track.state.scheduler_ahead  # type: ignore[misc]
        track.state.scheduler_ahead = None
        if at == self._gradients.backward_count:
            self._judge_now(SchedulerAhead(track.index, step, name))


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

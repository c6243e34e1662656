"""Each optimizer step's record: begun as the step starts, its gradients read (before the
step, or after its closure ran), finished as it ends, completed once its values are on
the host, then handed to the trace and to the rules."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import torch

from .. import device_clock, norms
from ..diagnostics import Diagnostics
from ..facts import StepFinished, UnoptimizedGradient
from ..memory import MemoryGauge
from ..schema import StepRecord
from .beside import NormsBeside, PendingNorms
from .gradients import GradientWatch
from .layout import ParamLayout
from .losses import LossBook, sum_losses
from .optimizers import OptimizerRegistry, OptimizerTrack
from .phases import CallLog, PhaseClock
from .progress import StepInProgress
from .readback import ReadBack
from .step_order import StepOrder, accumulated_on_device
from .unoptimized import UnoptimizedParams

SNAPSHOT_MAX_NUMEL = 1 << 28
"""Above this many parameter elements, update sizes are not measured (the copy would cost memory)."""


class StepRecords:
    """Builds the step records, and hands each finished one on."""

    def __init__(
        self,
        every: int,
        emit_step: Callable[[StepRecord], None],
        diagnostics: Diagnostics,
        start: float,
        optimizers: OptimizerRegistry,
        gradients: GradientWatch,
        order: StepOrder,
        losses: LossBook,
        phases: PhaseClock,
        log: CallLog,
        unoptimized: UnoptimizedParams,
        memory: MemoryGauge,
        on_cuda: Callable[[int | None], None],
    ) -> None:
        self.every = every
        """Every this many steps of an optimizer, a detail step: per-parameter norms and update sizes."""
        self._emit_step = emit_step
        self._diagnostics = diagnostics
        self._start = start
        self._optimizers = optimizers
        self._gradients = gradients
        self._order = order
        self._losses = losses
        self._phases = phases
        self._log = log
        self._unoptimized = unoptimized
        self._memory = memory
        self._on_cuda = on_cuda
        """Told the device the loop's values are on (once they are on CUDA)."""
        self.readback = ReadBack(self._complete)
        self.beside = NormsBeside()
        """Large gradients' norms, taken on a helper thread while plain steps run."""

    def begin(self, track: OptimizerTrack, optimizer: Any, scaler: Any, skipped: bool = False) -> StepInProgress:
        """A step begins (``scaler``: the GradScaler stepping it, if any; ``skipped``: one that
        GradScaler skipped, after the fact)."""
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
            lr=[lr if type(lr := group.get("lr")) is float else _lr(lr) for group in optimizer.param_groups],
            time={},
        )
        detail = bool(self.every) and step % self.every == 0 and not skipped
        progress = StepInProgress(record=record, track=track, detail=detail)
        if device_clock.capturing():  # cheap where CUDA was never initialized
            progress.captured = True
            progress.detail = False  # no snapshot, no per-parameter norms: nothing has run yet
        if scaler is not None and not progress.captured:
            progress.loss_scale = _as_value(getattr(scaler, "_scale", None))
            progress.grad_scale = _as_value(getattr(optimizer, "grad_scale", None))  # fused optimizers
        if progress.detail:
            params = self._optimizers.layout(track, optimizer).local_params()
            if sum(p.numel() for p in params) <= SNAPSHOT_MAX_NUMEL:
                progress.before = norms.snapshot(params)
        if not skipped:
            self._order.check(progress, optimizer)
        return progress

    def consume(self, progress: StepInProgress, optimizer: torch.optim.Optimizer, beside: bool = False) -> None:
        """Read the gradients this step consumes: norms, and the state for the ordering rules.
        ``beside``: as a plain step starts, large gradients' norms may be taken while it runs
        (`beside`)."""
        if progress.beside is not None:  # read again at the end: what was taken beside is not wanted
            progress.beside.result()
            progress.beside = None
        track = progress.track
        layout = self._optimizers.layout(track, optimizer)
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
        if not grads:
            self._order.found_no_gradients(progress)
        state = track.state
        state.consumed = (progress.present[0], weakref.ref(grads[0]), grads[0]._version) if grads else None
        self._losses.take(progress, self._gradients.backward_count)
        if progress.captured:
            progress.losses = []  # values of the replays to come, read at no particular one
        elif beside and not progress.detail and grads and self.beside.takes(track.index, optimizer, layout, grads):
            progress.beside = self.beside.submit(layout, grads, progress.present)
        else:
            _gradient_norms(progress, layout, grads)
        if progress.detail and self._diagnostics.judges(UnoptimizedGradient):
            self._unoptimized.check(track, progress.record.step, layout)
        needs_snapshot = not state.cleared_since_step or track.steps == 1
        self._gradients.consumed(track, params if needs_snapshot else None)

    def finish(self, progress: StepInProgress, end: float) -> None:
        """The step ended at ``end``: its calls and times; its values read now on the CPU,
        queued for read-back on a device."""
        if progress.beside is not None:
            self._take_beside(progress, progress.beside)
        record = progress.record
        record.t = end - self._start
        record.calls = self._log.take()
        progress.data_startup = self._phases.record_ended(record, end)
        if record.memory is None:  # read already where the record was made before it is finished
            record.memory = self._memory.read()
        if progress.before is not None:
            progress.update_pieces = norms.update_pieces(progress.before, norms.local_shards(progress.params))
            progress.before = None
        progress.on_device = progress.waits_on_device(self._losses.on_device)
        values = progress.device_values()
        device = self._phases.device
        if progress.on_device:
            self._on_cuda(next(v.device.index for v in values if v.is_cuda))
        if device.on:
            progress.device_phases = device.finish()
        if self.readback.waiting or progress.on_device or progress.device_phases is not None:
            self.readback.queue(progress, values)
        else:
            self._complete(progress, norms.read_floats(values))

    def _take_beside(self, progress: StepInProgress, pending: PendingNorms) -> None:
        """The norms taken while the step ran; none where it wrote its gradients meanwhile
        (and its optimizer's later steps take theirs in place)."""
        progress.beside = None
        taken = pending.result()
        if taken is None:
            self.beside.refused.add(progress.track.index)
            progress.grad_pieces, progress.piece_counts = [], [0] * len(progress.record.lr)
        else:
            progress.grad_pieces, progress.piece_counts = taken

    def _complete(self, progress: StepInProgress, values: list[float]) -> None:
        """The record's values are here: fill it in, emit it, and hand it to the rules."""
        record, track = progress.record, progress.track
        if progress.device_phases is not None:
            self._phases.retime(record, progress.device_phases)
        grad_values, update_values, dirty_values, loss_values, scales = progress.split(values)
        if progress.dirty_pending:
            accumulated_on_device(progress, dirty_values)
        loss_scale = scales.pop(0) if isinstance(progress.loss_scale, torch.Tensor) else progress.loss_scale
        grad_scale = scales.pop(0) if isinstance(progress.grad_scale, torch.Tensor) else progress.grad_scale
        grad_divisor = grad_scale or 1.0
        names = track.names
        record.loss = sum_losses(progress.losses, loss_values, loss_scale or 1.0)
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
        for fact in progress.facts or ():
            self._diagnostics.judge(fact, record.t)
        self._emit_step(record)
        culprit = lambda: _first_nonfinite_grad(progress.params, names)  # noqa: E731 - asked once at most
        self._diagnostics.check_step(
            StepFinished(
                record,
                names,
                param_norms,
                progress.missing,
                culprit,
                progress.backward_ran,
                progress.data_startup,
                self._phases.data.loader,
            )
        )


def _gradient_norms(progress: StepInProgress, layout: ParamLayout, grads: list[torch.Tensor]) -> None:
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


def _first_nonfinite_grad(params: list[torch.Tensor], names: list[str]) -> str | None:
    """The first parameter whose gradient holds NaN or Inf (CPU only: it reads values now).

    Called only when an optimizer's first `nonfinite` is reported, so the
    per-tensor loop costs nothing in a healthy run.
    """
    params = params[: len(names)]
    if not params or params[0].is_cuda:
        return None
    with torch.no_grad():
        for name, param in zip(names, params):
            grad = param.grad
            if grad is not None and not bool(torch.isfinite(norms.local_shards([grad])[0]).all()):
                return name
    return None


def _lr(value: Any) -> float | None:
    if isinstance(value, torch.Tensor):
        return float(value.detach()) if not value.is_cuda and value.numel() == 1 else None  # a learned lr requires grad
    return float(value) if isinstance(value, (int, float)) else None


def _as_value(scale: Any) -> Any:
    """A GradScaler scale as a float on the CPU, a device tensor on CUDA, or None."""
    if scale is None:
        return None
    if isinstance(scale, torch.Tensor):
        return scale.detach() if scale.is_cuda else float(scale)
    return float(scale)

"""Large gradients' norms taken on a helper thread while the optimizer's step runs.

On the CPU an exact global norm of tens of MB of gradients is one pass over them, on the
training thread, before the step: a millisecond or more a step. Torch kernels release
the GIL, so a second thread can take it while the step runs, and the step's end waits for
it. That is exact only where the step does not write the gradients it reads: PyTorch's
own Adam, AdamW and SGD (without Nesterov momentum) compute weight decay and
``maximize`` out of place on their usual paths, but their fused and differentiable paths
and SGD's Nesterov momentum write into them, as a custom optimizer may
(``p.grad.add_(p, alpha=wd)``, or through ``.data``, which no version counter shows), as
may a step pre-hook of the optimizer's own. Only those three classes, exactly, on those
paths, with no step hook but stepdbg's (a pre-hook registered after stepdbg's, and a
post-hook of the optimizer's own, which runs before stepdbg's, would run beside the norm
and may write the gradients), are taken here; a moved ``_version`` of the first or
last gradient (which should never happen) drops the step's norm rather than report one
read mid-write, and sends that optimizer's later steps back to the training thread.

Small gradients stay on the training thread: handing them over costs more than their
norm (measured on a 0.4 ms step: 1.08x the bare loop against 1.05x in place).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

import torch
import torch.optim.optimizer as optimizer_module

from .layout import ParamLayout

BESIDE_MIN_NUMEL = 1 << 17
"""Gradient elements (all of an optimizer's) from which a norm goes to the helper thread: at
200K (the benchmark's wide loop, 96 tensors) it takes a third off the time in the hooks; at 2K
(tiny) handing it over costs more than the norm."""

_CLASSES = (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD)
"""Optimizers whose usual step reads its gradients and writes none of them (see the module)."""

Pieces = tuple[list[torch.Tensor], list[int]]

_global_pre_hooks = optimizer_module._global_optimizer_pre_hooks
_global_post_hooks = optimizer_module._global_optimizer_post_hooks


class PendingNorms:
    """The norms of one step's gradients, being taken on the helper thread."""

    __slots__ = ("_done", "_error", "_grads", "_value", "_versions")

    def __init__(self, grads: list[torch.Tensor]) -> None:
        self._done = threading.Lock()
        self._done.acquire()
        self._value: Pieces | None = None
        self._error: BaseException | None = None
        self._grads: list[torch.Tensor] | None = grads
        self._versions = (grads[0]._version, grads[-1]._version)

    def _run(self, compute: Callable[[], Pieces]) -> None:
        try:
            self._value = compute()
        except BaseException as error:  # raised on the training thread, in the hook that waits
            self._error = error
        finally:
            self._done.release()

    def result(self) -> Pieces | None:
        """The norm pieces and their counts per group, once taken; None where the step wrote
        the gradients meanwhile (a norm read mid-write is no norm)."""
        with self._done:
            pass
        grads, self._grads = self._grads, None  # held no longer than the step
        if self._error is not None:
            raise self._error
        if grads is None or (grads[0]._version, grads[-1]._version) != self._versions:
            return None
        return self._value


class NormsBeside:
    """One daemon thread, started at the first large step, taking norms as steps run."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[PendingNorms, Callable[[], Pieces]]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.refused: set[int] = set()
        """Optimizer tracks (by index) whose step wrote its gradients once: kept in place."""

    def takes(self, index: int, optimizer: Any, layout: ParamLayout, grads: list[torch.Tensor]) -> bool:
        """Whether this step's norms (not a detail step's, nor one under GradScaler or a closure)
        can be taken beside it."""
        if (
            layout.numel < BESIDE_MIN_NUMEL
            or type(optimizer) not in _CLASSES
            or index in self.refused
            or optimizer._optimizer_step_pre_hooks
            or optimizer._optimizer_step_post_hooks
            or len(_global_pre_hooks) + len(_global_post_hooks) != 2  # stepdbg's own, alone
            or not grads[0].is_cpu
            or layout.sharded
        ):
            return False
        sgd = type(optimizer) is torch.optim.SGD
        for group in optimizer.param_groups:
            if group.get("fused") or group.get("differentiable") or (sgd and group.get("nesterov")):
                return False
        return True

    def submit(self, layout: ParamLayout, grads: list[torch.Tensor], present: list[int]) -> PendingNorms:
        pending = PendingNorms(grads)
        if self._thread is None or not self._thread.is_alive():  # first use, or a forked child
            self._jobs = queue.SimpleQueue()
            self._thread = threading.Thread(target=_serve, args=(self._jobs,), name="stepdbg-norms", daemon=True)
            self._thread.start()
        self._jobs.put((pending, lambda: layout.grad_norm_pieces(grads, present)))
        return pending


def _serve(jobs: queue.SimpleQueue[tuple[PendingNorms, Callable[[], Pieces]]]) -> None:
    torch._C._set_grad_enabled(False)  # grad mode is per thread: a norm of gradients that require grad builds no graph
    while True:
        pending, compute = jobs.get()
        pending._run(compute)

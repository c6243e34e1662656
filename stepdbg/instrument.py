"""Hooks in and out: every optimizer step, gradient clearing and backward pass.

What is patched, and why there (docs/instrumentation.md says what users see of it):
- optimizer steps: PyTorch's *global* step pre/post hooks, which fire for every
  optimizer, built before or after, custom subclasses and wrapped ones alike;
- ``Optimizer.__init__``: to number optimizers in creation order;
- ``Optimizer.zero_grad`` and ``Module.zero_grad`` on the classes (never on
  instances: lr schedulers patch ``opt.step`` on the instance themselves);
- the autograd engine entry ``_engine_run_backward``, which ``Tensor.backward``,
  ``torch.autograd.backward`` and ``torch.autograd.grad`` all go through;
- ``GradScaler.step``, to tell a skipped step from a missing one;
- ``_BaseDataLoaderIter.__next__``, which both DataLoader iterators inherit: the time a loop
  waits for its batches (see `data_wait`);
- ``torch.compile``, only to keep Dynamo out of stepdbg's own code once a script
  compiles something (see `keep_compiler_out`);
- lr schedulers only where they are built (``LRScheduler._initial_step``,
  ``ReduceLROnPlateau.__init__``, and the ``__init__`` of ``SequentialLR`` and
  ``ChainedScheduler``, which run no initial step of their own): their steps are
  noticed from their state at the next instrumented call, so no stepdbg frame
  stands between the user's code and ``scheduler.step()`` (PyTorch's own scheduler
  warnings keep pointing at the user's line).

The collector's memory gauge is opened with the hooks and closed with them.
Everything is restored on `uninstall`, even after an error. A failure inside
stepdbg never reaches the user's script: instrumentation reports it once and
goes quiet.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

import torch
import torch.autograd.graph
import torch.utils.data.dataloader
from torch.optim.lr_scheduler import ChainedScheduler, LRScheduler, ReduceLROnPlateau, SequentialLR
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

from .collector import Collector

_ENGINE_OWNERS = (torch.autograd.graph, torch.autograd)


class Instrumentation:
    """Installs stepdbg's hooks process-wide and removes them again."""

    def __init__(self, collector: Collector, prefix: str = "stepdbg:") -> None:
        self.collector = collector
        self.prefix = prefix
        """What stepdbg's lines start with (``stepdbg[rank 1]:`` for a rank)."""
        self.failed: str | None = None
        self._patches: list[tuple[Any, str, Any]] = []
        self._handles: list[Any] = []
        self._compiler_kept_out = False

    # ---- safety -------------------------------------------------------------------------

    def _guard(self, call: Callable[..., Any], *args: Any) -> Any:
        """Run collector code; on an internal error, say so once and stop collecting.

        The hooks that run at every step (optimizer steps, zero_grad, backward) make the same
        check in their own body instead: a call through here costs a frame, about half a
        microsecond a hook on a loaded 2-vCPU machine, a few a step."""
        if self.failed is not None:
            return None
        try:
            return call(*args)
        except Exception as error:  # the user's training must go on
            self._fail(error)
            return None

    def _fail(self, error: Exception) -> None:
        """Collector code raised: say so once, and collect nothing more."""
        self.failed = f"{type(error).__name__}: {error}"
        print(f"{self.prefix} internal error, tracing stopped: {self.failed}", file=sys.stderr)

    def finish(self) -> None:
        """The run is over: the records still waiting on a device emitted, unless an internal
        error stopped tracing (then what waits is dropped, and the error is not raised again)."""
        self._guard(self.collector.finish)

    # ---- install / uninstall ------------------------------------------------------------

    def _patch(self, owner: Any, name: str, make: Callable[[Any], Any]) -> None:
        original = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
        self._patches.append((owner, name, original))
        setattr(owner, name, make(original))

    def install(self) -> None:
        self._handles = [
            register_optimizer_step_pre_hook(self._step_pre_hook),
            register_optimizer_step_post_hook(self._step_post_hook),
        ]
        self._patch(torch.optim.Optimizer, "__init__", self._wrap_optimizer_init)
        self._patch(torch.optim.Optimizer, "zero_grad", functools.partial(self._wrap_zero_grad, of_module=False))
        self._patch(torch.nn.Module, "zero_grad", functools.partial(self._wrap_zero_grad, of_module=True))
        self._install_backward()
        self._patch(LRScheduler, "_initial_step", self._wrap_scheduler_creation)
        self._patch(ReduceLROnPlateau, "__init__", self._wrap_scheduler_creation)
        self._patch(SequentialLR, "__init__", self._wrap_scheduler_creation)
        self._patch(ChainedScheduler, "__init__", self._wrap_scheduler_creation)
        self._patch(torch.amp.GradScaler, "step", self._wrap_scaler_step)
        self._patch(torch, "compile", self._wrap_compile)
        self._patch(torch.utils.data.dataloader._BaseDataLoaderIter, "__next__", self._wrap_fetch)
        self.collector.memory.open()

    def _install_backward(self) -> None:
        engine = getattr(torch.autograd.graph, "_engine_run_backward", None)
        if engine is not None:
            wrapped = self._wrap_backward(engine)
            for owner in _ENGINE_OWNERS:
                if getattr(owner, "_engine_run_backward", None) is engine:
                    self._patches.append((owner, "_engine_run_backward", engine))
                    owner._engine_run_backward = wrapped  # type: ignore[attr-defined]
            return
        # A torch without the private engine entry: the public call, which Tensor.backward uses too.
        self._patch(torch.autograd, "backward", self._wrap_backward)

    def uninstall(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        for owner, name, original in reversed(self._patches):
            setattr(owner, name, original)
        self._patches = []
        self.collector.memory.close()

    def __enter__(self) -> Instrumentation:
        self.install()
        return self

    def __exit__(self, *exc: object) -> None:
        self.uninstall()

    # ---- optimizer ----------------------------------------------------------------------

    def _step_pre_hook(self, optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        if self.failed is None:  # `_guard`, inline
            try:
                self.collector.on_step_start(optimizer, args, kwargs)
            except Exception as error:
                self._fail(error)

    def _step_post_hook(self, optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        if self.failed is None:  # `_guard`, inline
            try:
                self.collector.on_step_end(optimizer)
            except Exception as error:
                self._fail(error)

    def _wrap_optimizer_init(self, original: Callable[..., None]) -> Callable[..., None]:
        @functools.wraps(original)
        def __init__(optimizer: torch.optim.Optimizer, *args: Any, **kwargs: Any) -> None:
            original(optimizer, *args, **kwargs)
            self._guard(self.collector.on_optimizer_created, optimizer)

        return __init__

    def _wrap_zero_grad(self, original: Callable[..., None], of_module: bool) -> Callable[..., None]:
        """``Optimizer.zero_grad``, or ``Module.zero_grad`` (``of_module``: the module's parameters
        are the gradients cleared)."""
        collector = self.collector

        @functools.wraps(original)
        def zero_grad(owner: Any, *args: Any, **kwargs: Any) -> None:
            started = False  # the end is told whenever the start was, nested calls included
            if self.failed is None:  # `_guard`, inline
                try:
                    collector.on_zero_grad_start()
                    started = True
                except Exception as error:
                    self._fail(error)
            try:
                original(owner, *args, **kwargs)
            finally:
                if started and self.failed is None:
                    try:
                        if of_module:
                            collector.on_zero_grad_end(list(owner.parameters()), None)
                        else:
                            collector.on_zero_grad_end(None, owner)
                    except Exception as error:
                        self._fail(error)

        return zero_grad

    # ---- backward -----------------------------------------------------------------------

    def _wrap_backward(self, original: Callable[..., Any]) -> Callable[..., Any]:
        """Wraps the engine entry (outputs as a sequence; ``accumulate_grad=False`` for
        ``autograd.grad``) or, as a fallback, ``torch.autograd.backward`` (a tensor or a sequence)."""
        collector = self.collector

        @functools.wraps(original)
        def backward(outputs: Any, *args: Any, **kwargs: Any) -> Any:
            if torch.compiler.is_compiling():  # torch.compile tracing the user's code: not a real call
                return original(outputs, *args, **kwargs)
            accumulate = kwargs.get("accumulate_grad", True)
            seen = (outputs,) if isinstance(outputs, torch.Tensor) else outputs
            started = False  # the end is told whenever the start was, nested passes included
            if self.failed is None:  # `_guard`, inline
                try:
                    collector.on_backward_start(seen, accumulate)
                    started = True
                except Exception as error:
                    self._fail(error)
            try:
                return original(outputs, *args, **kwargs)
            finally:
                if started and self.failed is None:
                    try:
                        collector.on_backward_end(accumulate)
                    except Exception as error:
                        self._fail(error)

        return backward

    # ---- lr schedulers and GradScaler ---------------------------------------------------

    def _wrap_scheduler_creation(self, original: Callable[..., None]) -> Callable[..., None]:
        @functools.wraps(original)
        def wrapper(scheduler: Any, *args: Any, **kwargs: Any) -> None:
            original(scheduler, *args, **kwargs)
            self._guard(self.collector.on_scheduler_created, scheduler)

        return wrapper

    def _wrap_scaler_step(self, original: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(original)
        def step(scaler: Any, optimizer: Any, *args: Any, **kwargs: Any) -> Any:
            started = self.collector.clock()
            steps_before = self._guard(self.collector.on_scaler_step_start, scaler, optimizer)
            try:
                return original(scaler, optimizer, *args, **kwargs)
            finally:
                if steps_before is not None:
                    self._guard(self.collector.on_scaler_step_end, optimizer, steps_before, started)

        return step

    # ---- DataLoader ---------------------------------------------------------------------

    def _wrap_fetch(self, original: Callable[[Any], Any]) -> Callable[[Any], Any]:
        """A batch fetched from a DataLoader iterator: one clock read before, one after."""
        collector = self.collector

        @functools.wraps(original)
        def __next__(iterator: Any) -> Any:
            started = self._guard(collector.on_fetch_start, iterator)
            if started is None:
                return original(iterator)
            fetched = False
            try:
                batch = original(iterator)
                fetched = True
                return batch
            finally:
                self._guard(collector.on_fetch_end, started, fetched)

        return __next__

    # ---- torch.compile ------------------------------------------------------------------

    def _wrap_compile(self, original: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(original)
        def compile(*args: Any, **kwargs: Any) -> Any:
            self.keep_compiler_out()
            return original(*args, **kwargs)

        return compile

    def keep_compiler_out(self) -> None:
        """The script uses torch.compile: from now on Dynamo leaves stepdbg's code alone.

        Dynamo traces into the Python that compiled code calls: the step hooks of a compiled
        ``optimizer.step``, the backward entry under a ``loss.backward()`` in a compiled
        function, the module-registration hooks of the modules compiled autograd builds.
        Traced, stepdbg's code would run at trace time only (steps and backward passes go
        missing), warn on the user's stderr, recompile, or break the compilation. On
        Dynamo's skip list, each call into stepdbg is a graph break that runs as plain
        Python on the real tensors, and costs nothing where nothing is compiled.
        """
        if not self._compiler_kept_out:
            import torch._dynamo.trace_rules  # Dynamo takes ~1 s to import: only for scripts that compile

            torch._dynamo.trace_rules.add(__package__)
            self._compiler_kept_out = True


_COLLECTOR_ENTRIES = frozenset(
    function.__code__
    for function in (
        Instrumentation._guard,
        # called without `_guard` by the hooks that run at every step
        Collector.on_zero_grad_start,
        Collector.on_zero_grad_end,
        Collector.on_backward_start,
        Collector.on_backward_end,
        Collector.on_step_start,
        Collector.on_step_end,
    )
)


def collecting(frame: FrameType | None) -> bool:
    """Whether collector code runs at ``frame`` or below it: a hook, the trace writer and the
    run output it feeds (for a signal handler, which runs wherever the main thread was)."""
    while frame is not None:
        if frame.f_code in _COLLECTOR_ENTRIES:
            return True
        frame = frame.f_back
    return False

"""One traced process: its trace, what it prints, its hooks, and its end record.

`stepdbg run` makes one for the script's process (`runner`), and one in each
process that ``torch.multiprocessing`` starts during the run (`spawned_ranks`).
A process forked while a session is in progress inherits it, and must leave
it to its parent (see `_let_go_in_forked_child`). A script that ends with
``os._exit`` skips every ``finally`` and ``atexit``: the session ends first
(see `_end_sessions_then_exit`).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
import signal
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from . import __version__, exit_codes
from .diagnostics import Diagnostics
from .ownership import TraceInUse, tagged_trace_path
from .rules import Thresholds
from .run_output import RunOutput
from .schema import Anomaly, AnomalySteps, EndRecord, Header, OptimizerInfo, StepRecord
from .termination import TerminationHandler
from .tracefile import TraceWriter


class TraceNotWritable(OSError):
    """The trace file cannot be opened for writing (held by a live run, a folder that does not
    exist...): the message is the one line the user sees."""


@dataclass
class RunOptions:
    target: str
    args: list[str] = field(default_factory=list)
    module: bool = False
    trace: Path | None = None
    every: int = 50
    live: bool = True
    quiet: bool = False
    disabled: frozenset[str] = frozenset()
    strict: bool = False
    thresholds: Thresholds = field(default_factory=Thresholds)
    command: list[str] = field(default_factory=list)


class Recorder:
    """Where the collector's output goes: the trace file, the run's output, the totals."""

    def __init__(self, writer: TraceWriter, output: RunOutput) -> None:
        self.writer = writer
        self.output = output
        self.steps = 0
        self.anomalies: list[Anomaly] = []
        """Each problem as first reported (repeats are only counted, by `Diagnostics`)."""

    def optimizer(self, info: OptimizerInfo) -> None:
        self.writer.write(info.to_json())

    def step(self, record: StepRecord) -> None:
        self.writer.write_step(record)
        self.steps += 1
        self.output.on_step(record)

    def anomaly(self, anomaly: Anomaly) -> None:
        self.writer.write(anomaly.to_json())
        self.anomalies.append(anomaly)
        self.output.on_anomaly(anomaly)

    def anomaly_steps(self, steps: AnomalySteps) -> None:
        self.writer.write(steps.to_json())


_IN_PROGRESS: list[Callable[[], None]] = []
"""How to let go of each session in progress in this process."""


def session_in_progress() -> bool:
    """Whether this process is being traced now: its hooks are process-wide, so one at a time."""
    return bool(_IN_PROGRESS)


def _let_go_in_forked_child() -> None:
    """A process forked during a session (a multiprocessing or DataLoader worker, ``os.fork``)
    inherits it: its hooks, its open trace, its live table. They are the parent's: the
    child turns its hooks off and never writes to the trace or the terminal (its steps would
    mix with the parent's, its end record end the parent's trace)."""
    for let_go in _IN_PROGRESS:
        let_go()
    _IN_PROGRESS.clear()
    _HARD_EXITS.clear()  # multiprocessing's forked workers end with os._exit
    _claim_os_exit()


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_let_go_in_forked_child)


_HARD_EXITS: list[Callable[[int], int]] = []
"""How to end each session in progress in this process when the script calls ``os._exit``
(`Session._hard_exit`): given the script's exit code, each returns the one to exit with."""

_os_exit = os._exit


def _end_sessions_then_exit(status: int) -> NoReturn:
    """``os._exit`` while sessions are in progress: without this, the records of the last
    second (queued for the writer's thread) and the end record would be lost."""
    for end in reversed(_HARD_EXITS[:]):
        with contextlib.suppress(BaseException):
            status = end(status)
    _os_exit(status)


def _claim_os_exit() -> None:
    """``os._exit`` is stepdbg's while some session has an ending for it, Python's otherwise."""
    os._exit = _end_sessions_then_exit if _HARD_EXITS else _os_exit


def rank_trace_path(trace: Path, rank: int) -> Path:
    """``train.stepdbg.jsonl`` -> ``train.rank1.stepdbg.jsonl``; ``t.jsonl`` -> ``t.rank1.jsonl``."""
    return tagged_trace_path(trace, f"rank{rank}")


def _open_trace(trace_paths: Iterable[Path], output: RunOutput) -> TraceWriter:
    """A writer on the first of ``trace_paths`` that no live run holds (saying so on the run's
    output when it is not the first), or TraceNotWritable."""
    first: TraceInUse | None = None
    for path in trace_paths:
        try:
            writer = TraceWriter(path)
        except TraceInUse as e:
            first = first or e
            continue
        except OSError as e:
            raise TraceNotWritable(f"cannot write the trace {path}: {e.strerror}") from None
        if first is not None:
            output.note(f"{first.holder} is writing {first.path}: this run's trace is {path}")
        return writer
    assert first is not None, "no trace path to try"
    raise TraceNotWritable(f"cannot write the trace {first.path}: {first}")


def _device() -> str:
    """``"cuda"`` where a GPU is visible, asked through NVML where it can be: not
    ``torch.cuda.is_available()``, whose ``cuInit`` before the script has run would
    break CUDA in the processes the script forks (PyTorch's "poisoned fork")."""
    import torch

    if torch.backends.cuda.is_built() and torch.cuda.device_count() > 0:
        return "cuda"
    return "cpu"


class Session:
    """Collects one process's steps into one trace, from `start` to `end`."""

    def __init__(
        self,
        options: RunOptions,
        argv: list[str],
        command: str,
        trace_paths: Iterable[Path],
        output: RunOutput,
        rank: int | None,
    ) -> None:
        """``trace_paths``: where to write the trace, the first that no live run holds; the
        caller gives one (an explicit path: held, it is an error) or several (free names)."""
        self.writer = _open_trace(trace_paths, output)  # first: a trace held by another run stops the run at once
        self.trace_path = self.writer.path

        import torch  # the instrumentation needs it; the script will import it anyway

        from .collector import Collector
        from .instrument import Instrumentation, collecting
        from .module_tree import ModuleTree

        self.output = output
        self.recorder = Recorder(self.writer, output)
        self.started = time.time()
        self.writer.write(
            Header(
                stepdbg=__version__,
                torch=torch.__version__,
                python=platform.python_version(),
                argv=argv,
                command=command,
                cwd=os.getcwd(),
                start=datetime.datetime.fromtimestamp(self.started, datetime.timezone.utc).astimezone().isoformat(),
                device=_device(),
                every=options.every,
                pid=os.getpid(),
                rank=rank,
            ).to_json()
        )
        self.writer.flush()  # the header at once: a run that finds the file held names its pid
        self.diagnostics = Diagnostics(
            options.thresholds, options.disabled, self.recorder.anomaly, self.recorder.anomaly_steps
        )
        self.tree = ModuleTree()
        self.collector = Collector(
            options.every, self.diagnostics, self.recorder.step, self.recorder.optimizer, self.tree
        )
        self.instrumentation = Instrumentation(self.collector, output.prefix)
        self.termination = TerminationHandler(self._terminate, collecting)
        self._after_hard_exit: Callable[[EndRecord, int], int] | None = None

    def start(self, after_hard_exit: Callable[[EndRecord, int], int] | None = None) -> None:
        """Hooks in. If the script calls ``os._exit``, or SIGTERM or SIGHUP ends the process
        (see `termination`), the session ends there and then ``after_hard_exit`` (given the
        end record and the exit code) prints the end-of-run report and returns the exit code to use."""
        _IN_PROGRESS.append(self._let_go)
        self._after_hard_exit = after_hard_exit
        _HARD_EXITS.append(self._hard_exit)
        _claim_os_exit()
        self.tree.install()
        self.instrumentation.install()
        self.output.start()
        self.termination.install()

    def _let_go(self) -> None:
        self.instrumentation.uninstall()
        self.tree.uninstall()
        self.writer.detach()
        self.output.detach()
        self.termination.detach()

    def stop(self) -> None:
        """Hooks out, and every record still waiting on a device emitted."""
        self.termination.hold()
        if self._let_go in _IN_PROGRESS:
            _IN_PROGRESS.remove(self._let_go)
        if self._hard_exit in _HARD_EXITS:
            _HARD_EXITS.remove(self._hard_exit)
            _claim_os_exit()
        self.instrumentation.uninstall()
        self.tree.uninstall()
        self.instrumentation.finish()
        self.output.stop()

    def _hard_exit(self, code: int) -> int:
        """The script called ``os._exit(code)``: Python ends no further, so the session ends here."""
        self.stop()
        end = self.end(*outcome(SystemExit(code)))
        return self._after_hard_exit(end, code) if self._after_hard_exit is not None else code

    def _terminate(self, signum: int, stuck: bool) -> None:
        """SIGTERM or SIGHUP: the session ends here, before the signal ends the process.
        ``stuck``: on the watchdog's thread, while the main thread is blocked in a hook or
        elsewhere: the hooks stay as they are, and what waits on a device is dropped."""
        code = exit_codes.killed_by(signum)
        try:
            if stuck:
                self.output.stop()
            else:
                self.stop()
        finally:  # the terminal may be gone (SIGHUP): the trace first
            end = self.end("terminated", code, signal.Signals(signum).name)
        if self._after_hard_exit is not None:
            self._after_hard_exit(end, code)

    def end(self, status: str, code: int, terminated_by: str | None = None) -> EndRecord:
        """Write where the rules still firing fired, the end record, and close the trace."""
        self.diagnostics.close()
        end = EndRecord(
            status=status,
            exit_code=code,
            duration=time.time() - self.started,
            steps=self.recorder.steps,
            anomalies=dict(self.diagnostics.counts),
            time=self.collector.phases.totals,
            severities=dict(self.diagnostics.severities),
            signal=terminated_by,
        )
        self.writer.write(end.to_json())
        self.writer.close()
        self.termination.uninstall()
        return end


def outcome(error: BaseException | None) -> tuple[str, int]:
    """The end record's status and exit code for code that raised ``error`` (None: it returned).
    ``sys.exit(code)`` is an ending like any other, with Python's exit code for it."""
    if error is None:
        return "ok", exit_codes.OK
    if isinstance(error, SystemExit):
        code = error.code
        return "ok", exit_codes.OK if code is None else code if isinstance(code, int) else 1  # sys.exit("message")
    if isinstance(error, KeyboardInterrupt):
        return "interrupted", exit_codes.INTERRUPTED
    return "error", exit_codes.SCRIPT_RAISED


def print_exit_message(exit: SystemExit) -> None:
    """``sys.exit("message")`` prints the message on stderr, as Python does."""
    if exit.code is not None and not isinstance(exit.code, int):
        print(exit.code, file=sys.stderr)

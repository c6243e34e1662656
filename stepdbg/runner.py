"""Run a script exactly as ``python`` would, with stepdbg's instrumentation installed.

Like pyinstrument: ``runpy`` with ``__name__ == "__main__"``, ``sys.argv`` and
``sys.path[0]`` set as Python sets them and restored afterwards, the script's
exit code passed through. Unlike it, the trace's end record is written on
every path (normal end, ``sys.exit``, an exception, Ctrl-C), and the user's
traceback is shown without stepdbg's frames.
"""

from __future__ import annotations

import datetime
import importlib.util
import os
import platform
import runpy
import shlex
import sys
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from . import __version__
from .diagnostics import Diagnostics, Thresholds
from .live import View
from .schema import Anomaly, EndRecord, Header, OptimizerInfo, StepRecord
from .trace import TraceWriter

EXIT_INTERRUPTED = 130
EXIT_STRICT = 3
TRACE_SUFFIX = ".stepdbg.jsonl"


_RUNS_IN_PROGRESS: list[Callable[[], None]] = []
"""How to let go of each run in progress in this process (one, unless runs are nested in tests)."""


def _let_go_in_forked_child() -> None:
    """A process forked during a run (a multiprocessing or DataLoader worker, ``os.fork``)
    inherits the run: its hooks, its open trace, its terminal view. They are the parent's:
    the child turns its hooks off and never writes to the trace or the terminal (its steps
    would mix with the parent's, its end record end the parent's trace)."""
    for let_go in _RUNS_IN_PROGRESS:
        let_go()
    _RUNS_IN_PROGRESS.clear()


os.register_at_fork(after_in_child=_let_go_in_forked_child)


class ScriptNotFound(Exception):
    """The script or module to run does not exist, or the trace cannot be written."""


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


def default_trace_path(options: RunOptions) -> Path:
    """``train.py`` -> ``./train.stepdbg.jsonl``; one file per rank in a distributed run."""
    stem = options.target.rsplit(".", 1)[-1] if options.module else Path(options.target).stem
    rank = os.environ.get("RANK")
    suffix = f".rank{rank}{TRACE_SUFFIX}" if rank not in (None, "") else TRACE_SUFFIX
    return Path.cwd() / f"{stem}{suffix}"


class Recorder:
    """Where the collector's output goes: the trace file, the view, the totals."""

    def __init__(self, writer: TraceWriter, view: View) -> None:
        self.writer = writer
        self.view = view
        self.steps = 0

    def optimizer(self, info: OptimizerInfo) -> None:
        self.writer.write(info.to_json())

    def step(self, record: StepRecord) -> None:
        self.writer.write_step(record)
        self.steps += 1
        self.view.on_step(record)

    def anomaly(self, anomaly: Anomaly) -> None:
        self.writer.write(anomaly.to_json())
        self.view.on_anomaly(anomaly)


def _resolve(options: RunOptions) -> tuple[str, list[str]]:
    """The path or module to run and its ``sys.argv``, or ScriptNotFound."""
    if options.module:
        try:
            spec = importlib.util.find_spec(options.target)
        except (ImportError, ValueError) as e:
            raise ScriptNotFound(f"cannot import module {options.target!r}: {e}") from None
        if spec is None:
            raise ScriptNotFound(f"no module named {options.target!r}")
        return options.target, [spec.origin or options.target, *options.args]
    if options.target.startswith("-"):
        raise ScriptNotFound(f"no such option: {options.target} (options go before the script)")
    path = Path(options.target)
    if not path.exists():
        raise ScriptNotFound(f"no such file: {options.target}")
    if path.is_dir() and not (path / "__main__.py").exists():
        raise ScriptNotFound(f"{options.target} is a directory with no __main__.py")
    return options.target, [options.target, *options.args]


def _device() -> str:
    import torch

    if torch.backends.cuda.is_built() and torch.cuda.is_available():
        return "cuda"
    return "cpu"


def _exit_code(exit: SystemExit) -> int:
    """Python's own rule for SystemExit's argument."""
    code = exit.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _user_traceback(error: BaseException) -> types.TracebackType | None:
    """The traceback from the user's first frame on: stepdbg's and runpy's frames dropped."""
    skip = (str(Path(__file__).parent), runpy.__file__, "<frozen runpy>")
    tb = error.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(skip):
        tb = tb.tb_next
    return tb


def run_script(options: RunOptions) -> int:
    """Run the script under instrumentation; return the exit code stepdbg should exit with."""
    target, argv = _resolve(options)
    import torch  # noqa: F401 - the instrumentation needs it; the script will import it anyway

    from .collector import Collector
    from .instrument import Instrumentation
    from .names import ModuleTree

    trace_path = options.trace or default_trace_path(options)
    try:
        writer = TraceWriter(trace_path)
    except OSError as e:
        raise ScriptNotFound(f"cannot write the trace {trace_path}: {e.strerror}") from None
    console = Console(stderr=True)
    view = View(console, live=options.live, quiet=options.quiet)
    recorder = Recorder(writer, view)
    started = time.time()
    writer.write(
        Header(
            stepdbg=__version__,
            torch=torch.__version__,
            python=platform.python_version(),
            argv=argv,
            command=shlex.join(options.command or ["stepdbg", "run", target, *options.args]),
            cwd=os.getcwd(),
            start=datetime.datetime.fromtimestamp(started, datetime.timezone.utc).astimezone().isoformat(),
            device=_device(),
            every=options.every,
            pid=os.getpid(),
            rank=int(os.environ["RANK"]) if os.environ.get("RANK", "").isdigit() else None,
        ).to_json()
    )
    diagnostics = Diagnostics(options.thresholds, options.disabled, recorder.anomaly)
    tree = ModuleTree()
    collector = Collector(options.every, diagnostics, recorder.step, recorder.optimizer, tree)
    instrumentation = Instrumentation(collector)

    saved_argv, saved_path0 = sys.argv[:], sys.path[0] if sys.path else None
    status, code = "ok", 0
    error: BaseException | None = None
    sys.argv[:] = argv
    path0 = os.getcwd() if options.module else os.path.dirname(os.path.abspath(target))
    if sys.path:
        sys.path[0] = path0
    else:
        sys.path.insert(0, path0)
    def let_go() -> None:
        instrumentation.uninstall()
        tree.uninstall()
        writer.detach()
        view.detach()

    _RUNS_IN_PROGRESS.append(let_go)
    tree.install()
    instrumentation.install()
    view.start()
    try:
        if options.module:
            runpy.run_module(target, run_name="__main__", alter_sys=True)
        else:
            runpy.run_path(target, run_name="__main__")
    except SystemExit as exit:
        code = _exit_code(exit)
    except KeyboardInterrupt as interrupt:
        status, code, error = "interrupted", EXIT_INTERRUPTED, interrupt
    except BaseException as exception:  # noqa: BLE001 - the user's exception, shown as Python would
        status, code, error = "error", 1, exception
    finally:
        if let_go in _RUNS_IN_PROGRESS:
            _RUNS_IN_PROGRESS.remove(let_go)
        instrumentation.uninstall()
        tree.uninstall()
        collector.finish()
        view.stop()
        sys.argv[:] = saved_argv
        if saved_path0 is not None:
            sys.path[0] = saved_path0
    if error is not None:
        error.__traceback__ = _user_traceback(error)  # the default hook prints the exception's own
        sys.excepthook(type(error), error, error.__traceback__)
    end = EndRecord(
        status=status,
        exit_code=code,
        duration=time.time() - started,
        steps=recorder.steps,
        anomalies=dict(diagnostics.counts),
        time=collector.totals,
    )
    writer.write(end.to_json())
    writer.close()
    view.summary(end, str(trace_path))
    if options.strict and code == 0 and diagnostics.found_problems:
        return EXIT_STRICT
    return code

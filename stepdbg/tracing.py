"""Tracing a stretch of a process: `stepdbg.trace()`, and the run that `stepdbg run` is built on.

`TracedRun` is one traced stretch: a `Session` (trace, hooks, end record) with its
output, the ranks it starts with ``torch.multiprocessing`` traced beside it, the
end-of-run report and what ``strict`` makes of it. ``stepdbg run`` runs a script
in one (`runner`); ``stepdbg.trace()`` runs the code of a ``with`` block or of a
decorated function in one, and yields it, so that the code can read its
anomalies while it runs and after. The hooks are process-wide: one run at a time
in a process (`NestedTraceError`).
"""

from __future__ import annotations

import datetime
import functools
import itertools
import os
import shlex
import site
import sys
import sysconfig
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from rich import get_console
from rich.console import Console

from . import exit_codes
from .ownership import TRACE_SUFFIX, tagged_trace_path
from .rules import IDS as RULE_IDS
from .rules import Thresholds
from .run_output import RunOutput
from .schema import Anomaly, EndRecord
from .session import (
    RunOptions,
    Session,
    outcome,
    rank_trace_path,
    session_in_progress,
)
from .spawned_ranks import SpawnedRanks

MAX_FREE_NAMES = 1000
"""Default trace names tried before giving up: each one taken means a run still writing it."""

F = TypeVar("F", bound=Callable[..., Any])


class NestedTraceError(RuntimeError):
    """``stepdbg.trace()`` entered while this process is already traced."""


class StrictError(RuntimeError):
    """``stepdbg.trace(strict=True)``: the code succeeded, but stepdbg found a warning or an error.

    ``run`` is the `TracedRun`, in the process that traced it: a copy pickled to another
    (a Ray worker's error sent to the driver) keeps only the message."""

    def __init__(self, message: str, run: TracedRun | None = None) -> None:
        super().__init__(message)
        self.run = run

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (str(self),)


def _strict_failure(run: TracedRun) -> StrictError:
    """Each rule found, with the step where it first fired and how often it fired."""
    first: dict[str, Anomaly] = {}
    for anomaly in run.anomalies:
        if anomaly.severity != "info":
            first.setdefault(anomaly.rule, anomaly)
    found = "; ".join(
        f"{a.severity} {a.rule} at step {a.step}" + (f" (×{run.counts[a.rule]})" if run.counts[a.rule] > 1 else "")
        for a in first.values()
    )
    found = found or "problems in the ranks it started"
    return StrictError(f"stepdbg found {found} (strict=True); trace {run.path}", run)


def launcher_rank() -> int | None:
    """The rank a launcher (torchrun, accelerate launch) gave this process, if any."""
    rank = os.environ.get("RANK", "")
    return int(rank) if rank.isdigit() else None


def _draws_the_table() -> bool:
    """One process per terminal draws the live table: under a launcher (torchrun), local
    rank 0; the other ranks on the same terminal print plain lines."""
    return os.environ.get("LOCAL_RANK", "0") == "0"


def _rank_label() -> str:
    """Under a launcher with several ranks, which rank stepdbg's lines come from (as spawned ranks say)."""
    rank = launcher_rank()
    return f"rank {rank}" if rank is not None and os.environ.get("WORLD_SIZE", "1") != "1" else ""


def trace_paths_for(stem: str) -> Iterator[Path]:
    """Where a run's default trace may go, in order: ``train`` -> ``./train.stepdbg.jsonl``,
    then, where a live run writes it, free names ``train.1.stepdbg.jsonl``,
    ``train.2.stepdbg.jsonl``... Under a launcher, one file per rank:
    ``train.rank1.stepdbg.jsonl``, ``train.1.rank1.stepdbg.jsonl``..., so that the ranks of
    one run share a number."""
    default = Path.cwd() / f"{stem}{TRACE_SUFFIX}"
    free = (tagged_trace_path(default, str(number)) for number in range(1, MAX_FREE_NAMES))
    return ranked(itertools.chain([default], free))


def ranked(paths: Iterable[Path]) -> Iterator[Path]:
    """``paths``, each the rank's own file under a launcher that gives this process a rank."""
    rank = launcher_rank()
    return (rank_trace_path(path, rank) if rank is not None else path for path in paths)


class TracedRun:
    """One traced stretch of this process, into one trace file.

    `start` puts the hooks in, `stop` takes them out, `finish` writes the end record and
    prints the end-of-run report. While it runs and after, it tells the run's anomalies
    (each problem as first found; `counts` has the repeats) and its trace's path.
    """

    def __init__(
        self, options: RunOptions, argv: list[str], command: str, paths: Iterable[Path], strict_line: bool = False
    ) -> None:
        """``paths``: where the trace may go, the first that no live run writes (one path: an
        error where a live run writes it). ``strict_line``: where ``strict`` fails the run,
        print the line that says why, even when quiet (``stepdbg run``, whose exit code alone
        would say nothing; `Tracer` raises `StrictError` instead)."""
        candidates = iter(paths)
        self.path = next(candidates)
        """The trace file: the first choice, then, from `start` on, the one the session writes."""
        self._paths = itertools.chain([self.path], candidates)
        self.end: EndRecord | None = None
        """The end record, once the run has finished."""
        self._options = options
        self._argv, self._command = argv, command
        self._strict_line = strict_line
        self._session: Session | None = None
        self._ranks: SpawnedRanks | None = None
        self._rank_problems: list[tuple[str, str]] = []

    @property
    def anomalies(self) -> list[Anomaly]:
        """Every problem found so far, as first reported, in order."""
        return list(self._session.recorder.anomalies) if self._session is not None else []

    @property
    def errors(self) -> list[Anomaly]:
        """The anomalies of severity ``error``."""
        return [anomaly for anomaly in self.anomalies if anomaly.severity == "error"]

    @property
    def counts(self) -> dict[str, int]:
        """How many times each rule fired, repeats included."""
        return dict(self._session.diagnostics.counts) if self._session is not None else {}

    @property
    def steps(self) -> int:
        """Step records written so far."""
        return self._session.recorder.steps if self._session is not None else 0

    @property
    def problems(self) -> list[tuple[str, str]]:
        """Each warning and error found, here or (once finished) in a rank it started, as
        ``(severity, where)``: ``"missing-zero-grad at step 1"``, ``"nonfinite on rank 1"``."""
        here = [(a.severity, f"{a.rule} at step {a.step}") for a in self.anomalies if a.severity != "info"]
        return here + self._rank_problems

    @property
    def found_problems(self) -> bool:
        """Whether a warning or an error was found, here or (once finished) in a rank it started."""
        return bool(self.problems)

    @property
    def exit_code(self) -> int:
        """What the process exits with: the traced code's own code (0 for code that returned),
        or `exit_codes.STRICT` where ``strict`` fails code that succeeded."""
        code = self.end.exit_code if self.end is not None else exit_codes.OK
        return exit_codes.STRICT if self._strict_fails(code) else code

    def _strict_fails(self, code: int) -> bool:
        return self._options.strict and code == exit_codes.OK and self.found_problems

    def start(self) -> None:
        """Open the trace and put the hooks in; nothing is installed when this raises."""
        if session_in_progress():
            raise NestedTraceError(
                "stepdbg is already tracing this process (stepdbg run, or a stepdbg.trace() not yet exited): "
                "stepdbg.trace() cannot be nested or re-entered; keep the outermost one"
            )
        output = RunOutput(
            Console(stderr=True),
            live=self._options.live and _draws_the_table(),
            quiet=self._options.quiet,
            label=_rank_label(),
        )
        self._session = Session(self._options, self._argv, self._command, self._paths, output, launcher_rank())
        self.path = self._session.trace_path
        self._ranks = SpawnedRanks(self._options, self._argv, self._command, self.path)
        self._session.start(after_hard_exit=self._after_hard_exit)
        self._ranks.install()

    def adopt_existing(self) -> None:
        """Take the models, optimizers and lr schedulers built before `start` (in a notebook's
        earlier cells) as if built under the hooks. ``stepdbg run`` has none: it starts first."""
        # imported here: it imports torch, which reading traces never needs
        from .existing import adopt_existing

        assert self._session is not None
        session = self._session
        try:
            adopt_existing(session.tree, session.collector, session.instrumentation)
        except Exception as error:  # tracing goes on, with what it sees from now on
            print(
                f"{session.output.prefix} internal error looking for the models built before tracing: "
                f"{type(error).__name__}: {error}",
                file=sys.stderr,
            )

    def stop(self) -> None:
        """Hooks out, and the terminal given back (before the code's traceback is shown)."""
        assert self._session is not None and self._ranks is not None
        self._ranks.uninstall()
        self._session.stop()

    def finish(self, error: BaseException | None) -> EndRecord:
        """The end record for code that raised ``error`` (None: it returned), and the report."""
        assert self._session is not None
        self.end = self._session.end(*outcome(error))
        self._report_end(self.end)
        return self.end

    def _after_hard_exit(self, end: EndRecord, code: int) -> int:
        """The code called ``os._exit(code)``: the end-of-run report, and the code to exit with."""
        self.end = end
        self._report_end(end)
        return self.exit_code

    def _report_end(self, end: EndRecord) -> None:
        """The end-of-run report, with a line per rank started with ``torch.multiprocessing``
        (and why ``--strict`` fails the run): one write (in a notebook, one output)."""
        assert self._session is not None and self._ranks is not None
        session = self._session
        rank_ends = self._ranks.ends(since=session.started)
        self._rank_problems = self._ranks.problems(rank_ends)
        rank_lines = {rank: (str(path), rank_end) for rank, (path, rank_end) in rank_ends.items()}
        with session.output.console:
            session.output.report_end(end, str(self.path), rank_lines, stopped=session.instrumentation.failed)
            if self._strict_line and self._strict_fails(end.exit_code):
                session.output.report_strict_failure(self.problems)


class Tracer:
    """What `trace` returns: a context manager, and a decorator whose every call is a run."""

    def __init__(self, path: Path | None, options: RunOptions) -> None:
        self._path = path
        self._options = options
        self._run: TracedRun | None = None

    def __enter__(self) -> TracedRun:
        argv = list(sys.argv)
        paths = [self._path] if self._path is not None else default_trace_paths()
        run = TracedRun(self._options, argv, _command(argv), paths)
        run.start()  # a trace that cannot be written: `TraceNotWritable`, an OSError
        try:
            run.adopt_existing()
        except BaseException as error:  # Ctrl-C as the block begins: no __exit__ will take the hooks out
            run.stop()
            run.finish(error)
            raise
        self._run = run
        return run

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        """The code's own exception goes on unchanged; strict raises only after code that succeeded."""
        run, self._run = self._run, None
        assert run is not None
        run.stop()
        run.finish(error)
        if error is None and self._options.strict and run.found_problems:
            raise _strict_failure(run)

    def __call__(self, function: F) -> F:
        @functools.wraps(function)
        def traced(*args: Any, **kwargs: Any) -> Any:
            with self:
                return function(*args, **kwargs)

        return traced  # type: ignore[return-value]


def _command(argv: list[str]) -> str:
    """The header's command: the process's command line, but in Jupyter, where that is the
    kernel's (``ipykernel_launcher -f kernel-1234.json``), where it ran."""
    if get_console().is_jupyter:
        return "stepdbg.trace() in a Jupyter kernel"
    return f"stepdbg.trace() in {shlex.join(argv)}" if argv else "stepdbg.trace()"


def trace(
    path: str | os.PathLike[str] | None = None,
    *,
    every: int = 50,
    strict: bool = False,
    disable: str | Iterable[str] = (),
    live: bool = True,
    quiet: bool = False,
    explode_ratio: float = Thresholds.explode_ratio,
    vanish_ratio: float = Thresholds.vanish_ratio,
    patience: int = Thresholds.patience,
) -> Tracer:
    """Trace the training steps of a ``with`` block, or of each call of a decorated function,
    as ``stepdbg run`` traces a script: the same hooks, trace, rules and end-of-run report.

    ``path``: the trace file (default: see `default_trace_paths`). ``every``: per-parameter
    detail every N steps (0: never). ``strict``: raise `StrictError` after code that
    succeeded when a warning or an error was found. ``disable``: rule ids to turn off (a
    list, or one comma-separated string). ``live``: the live table (in a notebook, in the
    cell's output). ``quiet``: nothing printed but errors. The thresholds are
    ``stepdbg run``'s ``--explode-ratio``, ``--vanish-ratio`` and ``--patience``.
    """
    if callable(path):  # @stepdbg.trace on a function: the function came as the path
        raise TypeError("stepdbg.trace is called to make a decorator: @stepdbg.trace(), not @stepdbg.trace")
    names = {name.strip() for name in disable.split(",")} - {""} if isinstance(disable, str) else set(disable)
    unknown = sorted(names - set(RULE_IDS))
    if unknown:
        raise ValueError(f"unknown rule {', '.join(unknown)} for disable (valid: {', '.join(RULE_IDS)})")
    for name, value, low in (
        ("every", every, 0),
        ("explode_ratio", explode_ratio, 1.0),
        ("vanish_ratio", vanish_ratio, 0.0),
        ("patience", patience, 1),
    ):
        if not value >= low:  # NaN fails too
            raise ValueError(f"{name} must be >= {low}, not {value!r}")
    options = RunOptions(
        target=sys.argv[0] if sys.argv else "",
        every=int(every),
        live=live and not quiet,
        quiet=quiet,
        disabled=frozenset(names),
        strict=strict,
        thresholds=Thresholds(explode_ratio=explode_ratio, vanish_ratio=vanish_ratio, patience=int(patience)),
    )
    return Tracer(Path(path) if path is not None else None, options)


def default_trace_paths() -> Iterator[Path]:
    """Where `trace` writes without a path: named after the script this process runs
    (``python train.py``, ``accelerate launch train.py``: ``train.stepdbg.jsonl``), else
    (a notebook, a REPL, a worker whose main module is its launcher's) after the time,
    ``stepdbg-YYYYmmdd-HHMMSS.stepdbg.jsonl``, never an existing file; in the current
    directory, one file per rank, and a free name where a live run writes it, as for
    ``stepdbg run`` (`trace_paths_for`)."""
    stem = _script_stem()
    if stem is not None:
        return trace_paths_for(stem)
    base = stem = datetime.datetime.now().strftime("stepdbg-%Y%m%d-%H%M%S")
    number = 1
    while next(trace_paths_for(stem)).exists():
        number += 1
        stem = f"{base}-{number}"
    return trace_paths_for(stem)


def _script_stem() -> str | None:
    """The stem of the ``__main__`` module's file, unless there is none or it belongs to an
    installed package or the standard library (``ipykernel_launcher``, a Ray worker, pytest)."""
    file = getattr(sys.modules.get("__main__"), "__file__", None)
    if not isinstance(file, str) or not file.endswith(".py"):
        return None
    installed = {sysconfig.get_path(name) for name in ("purelib", "platlib", "stdlib", "platstdlib")}
    installed.add(site.getusersitepackages())
    folder = os.path.realpath(file)
    if any(folder.startswith(os.path.realpath(root) + os.sep) for root in installed if root):
        return None
    return Path(file).stem

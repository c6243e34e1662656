"""Ranks started with ``torch.multiprocessing``: one trace each, like torchrun's.

PyTorch's DDP tutorial starts its ranks with ``torch.multiprocessing.spawn(fn,
nprocs=N)``: new interpreters that the main process's hooks never reach. While
the script runs, the function each started process runs (``_wrap(fn, rank, args,
error_file)``, which calls ``fn`` and reports its exception to the parent) is
replaced by a `TracedRank`, pickled to each process in its place: rank ``i`` runs
it in a `Session` of its own, traced into ``<trace>.rank<i>``, and prints its
anomalies as they happen; the main process reads the ranks' end records when the
script ends, for its end-of-run report and ``--strict``. ``_wrap`` stays between
stepdbg and ``fn``, so the traceback of a rank that raises is the same as without
stepdbg.
Other child processes (DataLoader workers, a bare ``multiprocessing.Process``) are
not traced, and a forked one leaves its parent's session alone (see `session`).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from .rules import severity_of
from .run_output import RunOutput
from .schema import EndRecord
from .session import RunOptions, Session, TraceNotWritable, outcome, rank_trace_path
from .tracefile import read_end

MTIME_SLACK = 2.0
"""Seconds a file's modification time may lag the clock (filesystems that keep whole or even seconds)."""


@dataclass(frozen=True)
class TracedRank:
    """Runs in each process that ``start_processes`` starts, in place of its ``_wrap``."""

    wrap: Callable[..., Any]
    options: RunOptions
    argv: list[str]
    command: str
    trace: Path

    def __call__(self, fn: Callable[..., Any], rank: int, *rest: Any) -> Any:
        module = _spawn_module()
        if isinstance(module._wrap, TracedRank):  # forked with the patch: ranks this rank starts are its own business
            module._wrap = self.wrap
        output = RunOutput(Console(stderr=True), live=False, quiet=self.options.quiet, label=f"rank {rank}")
        try:
            session = Session(self.options, self.argv, self.command, [rank_trace_path(self.trace, rank)], output, rank)
        except TraceNotWritable as e:  # the rank trains all the same, untraced
            print(f"stepdbg[rank {rank}]: {e}", file=sys.stderr)
            return self.wrap(fn, rank, *rest)
        session.start()
        error: BaseException | None = None
        try:
            return self.wrap(fn, rank, *rest)
        except BaseException as raised:
            error = raised
            raise
        finally:
            status, code = outcome(error)
            if isinstance(error, SystemExit) and code and _reported_an_error(rest):
                status = "error"  # ``_wrap`` exits 1 once it has reported fn's exception
            session.stop()
            session.end(status, code)

    def __reduce__(self) -> tuple[Any, ...]:
        # by reference, ``_wrap`` would name the module attribute this object has replaced
        return (_traced_rank, (self.options, self.argv, self.command, self.trace))


def _traced_rank(options: RunOptions, argv: list[str], command: str, trace: Path) -> TracedRank:
    """A `TracedRank` unpickled in a spawned interpreter: around that interpreter's ``_wrap``."""
    return TracedRank(_spawn_module()._wrap, options, argv, command, trace)


def _spawn_module() -> Any:
    return importlib.import_module("torch.multiprocessing.spawn")  # the package's `spawn` is the function


def _reported_an_error(rest: tuple[Any, ...]) -> bool:
    """Whether ``_wrap`` wrote fn's traceback to its error file (its last argument)."""
    error_file = rest[-1] if rest else None
    return isinstance(error_file, str) and os.path.exists(error_file) and os.path.getsize(error_file) > 0


class SpawnedRanks:
    """Replaces ``torch.multiprocessing``'s ``_wrap`` while the script runs."""

    def __init__(self, options: RunOptions, argv: list[str], command: str, trace: Path) -> None:
        self._options, self._argv, self._command, self._trace = options, argv, command, trace
        self._module: Any = None
        self._original: Callable[..., Any] | None = None
        self.traced = False
        """Whether ranks started during the run are traced (this torch has ``_wrap``)."""

    def install(self) -> None:
        module = _spawn_module()
        original = getattr(module, "_wrap", None)
        if not callable(original) or isinstance(original, TracedRank):
            return  # another torch: its ranks are not traced
        self._module, self._original = module, original
        self.traced = True
        module._wrap = TracedRank(original, self._options, self._argv, self._command, self._trace)

    def uninstall(self) -> None:
        if self._module is not None:
            self._module._wrap = self._original
            self._module = self._original = None

    def ends(self, since: float) -> dict[int, tuple[Path, EndRecord | None]]:
        """Each rank's trace written since ``since`` (the run's start: not one left by an
        earlier run), with its end record (None for a rank that wrote none: killed, or
        still running)."""
        found: dict[int, tuple[Path, EndRecord | None]] = {}
        if not self.traced:
            return found
        rank = 0
        while _written_since(path := rank_trace_path(self._trace, rank), since):
            found[rank] = (path, read_end(path))
            rank += 1
        return found

    @staticmethod
    def problems(ends: dict[int, tuple[Path, EndRecord | None]]) -> list[tuple[str, str]]:
        """Each rule that found a warning or an error on a rank, as ``(severity, "rule on rank N")``:
        at the gravest severity the rank reported it (see `EndRecord.severities`)."""
        found = []
        for rank, (_, end) in ends.items():
            if end is None:
                continue
            for rule in end.anomalies:
                severity = end.severities.get(rule) or severity_of(rule)
                if severity != "info":
                    found.append((severity, f"{rule} on rank {rank}"))
        return found


def _written_since(path: Path, since: float) -> bool:
    try:
        return path.stat().st_mtime >= since - MTIME_SLACK
    except OSError:
        return False

"""`stepdbg export`: a run's traces in the formats other tools read.

``perfetto``: a Chrome Trace Event file (`perfetto`); ``tensorboard``: event files
(`tensorboard`); ``csv``: the table of ``show --format csv``, by the same renderer
(`renderers.show_csv`). Each
reads the traces through the same filtered view as ``show`` (``--steps``,
``--optimizer``, ``--param``). Bad options and unreadable traces raise `ValueError`
or `TraceError` with the one line the CLI prints.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from ..renderers.show_csv import write_table
from ..tracefile import Trace
from ..view import StepFilter, TraceView

FORMATS = ("perfetto", "tensorboard", "csv")
TENSORBOARD_LOGDIR = "runs"
"""Beside the trace, as torch's SummaryWriter names its own: ``tensorboard --logdir runs``."""


@dataclass
class ExportOptions:
    to: str
    out: Path | None = None
    steps: str | None = None
    optimizer: int | None = None
    param: str | None = None


def default_output(trace: Path, to: str) -> Path | None:
    """Where an export goes without ``-o``: beside the (first) trace; CSV to stdout (None)."""
    if to == "perfetto":
        return trace.with_suffix(".perfetto.json")
    if to == "tensorboard":
        return trace.parent / TENSORBOARD_LOGDIR
    return None


def export_traces(paths: Sequence[Path], options: ExportOptions, stdout: TextIO | None = None) -> list[Path]:
    """Write the export; returns the files or run directories written (none for CSV on stdout)."""
    if options.to not in FORMATS:
        raise ValueError(f"unknown format {options.to!r} for --to (valid: {', '.join(FORMATS)})")
    step_filter = StepFilter.from_options(options.steps, options.optimizer)
    out = options.out if options.out is not None else default_output(paths[0], options.to)
    if options.to == "csv":
        if len(paths) > 1:
            raise ValueError("--to csv writes one trace's table: give one trace")
        view = TraceView(Trace(paths[0]), step_filter)
        if out is None or str(out) == "-":
            write_table(view, stdout or sys.stdout, param=options.param)
            return []
        with open(out, "w", encoding="utf-8", newline="") as file:
            write_table(view, file, param=options.param)
        return [out]
    assert out is not None
    if options.to == "perfetto":
        if options.param is not None:
            raise ValueError("--param has no meaning for --to perfetto (a timeline has no per-parameter figures)")
        if out.is_dir():
            raise ValueError(f"{out} is a directory: -o takes the JSON file to write")
        from .perfetto import write_perfetto

        write_perfetto(paths, step_filter, out)
        return [out]
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file: -o takes the log directory TensorBoard reads")
    from .tensorboard import write_tensorboard

    return write_tensorboard(paths, step_filter, out, options.param)

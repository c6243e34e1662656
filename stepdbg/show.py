"""`stepdbg show`: summarize a trace in one streaming pass.

`show_stats` gathers the figures, `show_render` turns them into the rich view or
JSON; ``--csv`` streams rows straight from the trace. Several traces are the ranks
of one run, compared by `ranks` and shown by `ranks_render`. Bad options and unreadable
traces raise `ValueError` / `TraceError` with one line for the CLI to print.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from rich.console import Console

from .ranks import compare_ranks
from .ranks_render import render_ranks
from .show_render import render, summary_json, write_csv
from .show_stats import collect
from .trace import Trace, dumps
from .view import StepFilter


@dataclass
class ShowOptions:
    steps: str | None = None
    optimizer: int | None = None
    param: str | None = None
    anomalies_only: bool = False
    json: bool = False
    csv: bool = False


def show_trace(
    path: str | Path, options: ShowOptions, console: Console | None = None, out: TextIO | None = None
) -> None:
    """Print the view of the trace at ``path``: rich on ``console`` (stdout), or JSON/CSV on ``out`` (stdout)."""
    step_filter = StepFilter.from_options(options.steps, options.optimizer)
    trace = Trace(path)
    out = out if out is not None else sys.stdout
    if options.csv:
        write_csv(trace, step_filter, out, anomalies_only=options.anomalies_only, param=options.param)
        return
    summary = collect(trace, step_filter, options.param)
    if options.json:
        out.write(dumps(summary_json(summary, options.anomalies_only)) + "\n")
    else:
        (console or Console()).print(render(summary, options.anomalies_only))


def show_ranks(
    paths: Sequence[str | Path], options: ShowOptions, console: Console | None = None, out: TextIO | None = None
) -> None:
    """Print several traces side by side, as the ranks of one run (see `ranks`)."""
    if options.csv or options.param is not None or options.anomalies_only:
        raise ValueError("several traces are compared as ranks: --csv, --param and --anomalies take one trace")
    comparison = compare_ranks(paths, StepFilter.from_options(options.steps, options.optimizer))
    if options.json:
        (out if out is not None else sys.stdout).write(dumps(comparison.to_json()) + "\n")
    else:
        (console or Console()).print(render_ranks(comparison))

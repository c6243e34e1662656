"""`stepdbg show`: a trace's view, in one streaming pass, in the format asked for.

The view (`view.TraceView`: ``--steps``, ``--optimizer``) is read once by the
renderer of the format (`renderers`): ``text`` and ``json`` fold it into
`show_stats.ShowStats` first, ``csv`` streams its rows. Several traces are the ranks
of one run, compared by `ranks` (each read through its own view) and written by a
ranks renderer. Bad options and unreadable traces raise `ValueError` / `TraceError`
with one line for the CLI to print.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from rich.console import Console

from .ranks import compare_ranks
from .renderers import DEFAULT_FORMAT, RANKS_FORMATS, SHOW_FORMATS, Output
from .tracefile import Trace
from .view import StepFilter, TraceView


@dataclass
class ShowOptions:
    steps: str | None = None
    optimizer: int | None = None
    param: str | None = None
    anomalies_only: bool = False
    format: str = DEFAULT_FORMAT
    """A name in `renderers.SHOW_FORMATS` (with several traces, in `renderers.RANKS_FORMATS`)."""


def show_trace(
    path: str | Path, options: ShowOptions, console: Console | None = None, out: TextIO | None = None
) -> None:
    """Print the view of the trace at ``path``: text on ``console``, data (JSON, CSV) on ``out`` (both stdout)."""
    render = SHOW_FORMATS[options.format]
    view = TraceView(Trace(path), StepFilter.from_options(options.steps, options.optimizer))
    render(view, options, Output(console, out))


def show_ranks(
    paths: Sequence[str | Path], options: ShowOptions, console: Console | None = None, out: TextIO | None = None
) -> None:
    """Print several traces side by side, as the ranks of one run (see `ranks`)."""
    render = RANKS_FORMATS.get(options.format)
    if render is None or options.param is not None or options.anomalies_only:
        raise ValueError("several traces are compared as ranks: --csv, --param and --anomalies take one trace")
    render(compare_ranks(paths, StepFilter.from_options(options.steps, options.optimizer)), Output(console, out))

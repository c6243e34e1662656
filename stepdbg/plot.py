"""`stepdbg plot`: a run's dashboard as a PNG, SVG or PDF file.

`plot_data` reads each trace once into bounded lines; `plot_figure` draws them
with matplotlib (the optional extra ``stepdbg[plot]``). Bad options and unreadable
traces raise `ValueError` / `TraceError`, a missing matplotlib `MissingExtra`, each
with the one line the CLI prints.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .extras import require
from .run_info import ranks_of_one_run, trace_labels
from .tracefile import Trace
from .view import StepFilter

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .plot_data import Divergence

FORMATS = (".png", ".svg", ".pdf")
DPI = 110


@dataclass
class PlotOptions:
    out: Path | None = None
    steps: str | None = None
    optimizer: int | None = None
    param: str | None = None


def default_output(trace: Path) -> Path:
    """Beside the trace: ``train.stepdbg.jsonl`` → ``train.stepdbg.png``."""
    return trace.with_suffix(".png")


def plot_traces(paths: Sequence[Path], options: PlotOptions) -> Path:
    """Draw the traces at ``paths`` into one figure file; returns its path."""
    out = options.out if options.out is not None else default_output(paths[0])
    if out.suffix.lower() not in FORMATS:
        raise ValueError(f"-o {out}: the figure is written as {', '.join(FORMATS)} (by the name's ending)")
    dashboard(paths, options).savefig(out, dpi=DPI)
    return out


def dashboard(paths: Sequence[Path], options: PlotOptions) -> Figure:
    """The figure of the traces at ``paths``, built but not drawn."""
    step_filter = StepFilter.from_options(options.steps, options.optimizer)
    require("matplotlib", "stepdbg plot", "plot")
    from .plot_data import gather
    from .plot_figure import build_figure

    runs = [gather(path, label, step_filter, options.param) for path, label in zip(paths, trace_labels(paths))]
    return build_figure(runs, _divergence(paths, step_filter), step_filter, options.param)


def _divergence(paths: Sequence[Path], step_filter: StepFilter) -> Divergence | None:
    """For two traces, where `diff` says they part, if that step is in view. The ranks of one
    run train on different batches: their losses differ by design, so ``loss`` is ignored
    there, as ``diff --ignore loss`` does."""
    from .plot_data import first_divergence

    if len(paths) != 2:
        return None
    ignore = frozenset({"loss"}) if ranks_of_one_run([Trace(path) for path in paths]) else frozenset()
    found = first_divergence(paths[0], paths[1], ignore)
    if found is None or not step_filter.admits(found.optimizer, found.step):
        return None
    return found

"""``stepdbg show --format json`` (``--json``): the view of a trace as one JSON object, for programs.

The same sections as the text view; the keys are listed in docs/trace-format.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..show_stats import ShowStats, collect
from ..tracefile import dumps
from ..view import TraceView
from .output import Output

if TYPE_CHECKING:
    from ..show import ShowOptions


def show_json(shown: ShowStats, anomalies_only: bool = False) -> dict[str, Any]:
    """The run, the filter, then the sections asked for, as the text view has them."""
    data: dict[str, Any] = {"run": shown.run.to_json(), "filter": shown.filter.description}
    if shown.params is not None:
        data["params"] = shown.params.to_json()
    elif not anomalies_only:
        data["optimizers"] = [stats.to_json() for stats in shown.optimizers.values()]
        data["time"] = shown.profile.to_json()
        data["memory"] = shown.memory.to_json()
    if anomalies_only or shown.params is None:
        data["anomalies"] = [group.to_json() for group in shown.anomalies.values()]
    return data


def write(view: TraceView, options: ShowOptions, out: Output) -> None:
    out.data.write(dumps(show_json(collect(view, options.param), options.anomalies_only)) + "\n")

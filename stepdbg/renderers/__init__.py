"""Output formats: one renderer per format, chosen by name (as pyinstrument's ``-r``).

``stepdbg show --format NAME`` and ``stepdbg diff --format NAME`` take their renderer
from these tables; the CLI lists, completes and checks the names from them too. Every
``show`` renderer reads the same filtered pass over the trace (`view.TraceView`); with
several traces, the ranks' comparison (`ranks.RankComparison`); every ``diff``
renderer the same `diff_compare.DiffResult`. Each writes to an `Output`.

A new format: a module here with a ``write`` function, and its name in the table of
its command. Say what it prints in docs/trace-format.md (for programs) or
docs/show-and-diff.md (for people).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from . import diff_json, diff_text, ranks_json, ranks_text, show_csv, show_json, show_text
from .output import Output

if TYPE_CHECKING:
    from ..diff_compare import DiffResult
    from ..ranks import RankComparison
    from ..show import ShowOptions
    from ..view import TraceView

ShowRenderer = Callable[["TraceView", "ShowOptions", Output], None]
RanksRenderer = Callable[["RankComparison", Output], None]
DiffRenderer = Callable[["DiffResult", Output], None]

SHOW_FORMATS: dict[str, ShowRenderer] = {"text": show_text.write, "json": show_json.write, "csv": show_csv.write}
RANKS_FORMATS: dict[str, RanksRenderer] = {"text": ranks_text.write, "json": ranks_json.write}
"""``show`` of several traces: the formats of `SHOW_FORMATS` that a comparison of ranks has."""
DIFF_FORMATS: dict[str, DiffRenderer] = {"text": diff_text.write, "json": diff_json.write}
DEFAULT_FORMAT = "text"

__all__ = [
    "DEFAULT_FORMAT",
    "DIFF_FORMATS",
    "RANKS_FORMATS",
    "SHOW_FORMATS",
    "DiffRenderer",
    "Output",
    "RanksRenderer",
    "ShowRenderer",
]

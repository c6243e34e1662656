"""How stepdbg's output looks, in one place: colours, the missing-value glyph, number formats,
the words for where something happened, and the table style of ``show`` and ``diff``.

`run`'s live table and end-of-run report, `show`, `diff` and `plot` all write through
these, so that the same figure, or the same missing value, reads the same everywhere.
rich handles ``NO_COLOR`` and outputs that are not a terminal itself.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

# --- colours ------------------------------------------------------------------------------

GOOD = "green"
"""All is well: no anomalies, a run that ended ok, two runs that agree."""
CAUTION = "yellow"
"""Worth a look: anomalies found, a run with no end record, no steps in view."""
BAD = "red"
"""Something failed: a run that raised, two runs that differ, tracing stopped early."""
LINE = "cyan"
"""Sparklines."""
HINT = "dim"
"""What to do about an anomaly, under it; figures beside a sparkline."""
SEVERITY_COLORS = {"error": BAD, "warning": CAUTION, "info": "cyan"}
"""Each anomaly severity's colour on a terminal."""
SEVERITY_FIGURE_COLORS = {"error": "#d62728", "warning": "#ff7f0e", "info": "#1f77b4"}
"""The same severities on a figure's white page (orange for yellow, blue for cyan)."""


def severity_style(severity: str) -> str:
    """The style of a rule's name where an anomaly is reported: bold, in its severity's colour."""
    return f"bold {SEVERITY_COLORS.get(severity, '')}".rstrip()


# --- values -------------------------------------------------------------------------------

MISSING = "–"
"""A value the trace does not have (no lr in a loop without an optimizer, a share of no time)."""


RUN_DIGITS = 4
"""Significant digits of the figures a run prints as it goes (the live table, progress lines);
``show`` and ``diff`` give 3, `fmt_num`'s default."""


def fmt_num(value: float | None, digits: int = 3) -> str:
    """A figure in ``digits`` significant digits; `MISSING` for none; ``nan``, ``inf`` as such."""
    if value is None:
        return MISSING
    if not math.isfinite(value):
        return str(value)
    return f"{value:.{digits}g}"


def fmt_seconds(seconds: float | None) -> str:
    """Seconds in the unit a person reads best: ``850 µs``, ``12.3 ms``, ``4.56 s``, ``2 h 03 min``."""
    if seconds is None or not math.isfinite(seconds):
        return fmt_num(seconds)
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.3g} ms"
    if seconds < 600:
        return f"{seconds:.3g} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def fmt_bytes(count: float | None) -> str:
    """``512 B``, ``3.2 MiB``, ``1.5 GiB``; `MISSING` for none."""
    if count is None:
        return MISSING
    sign, size, unit = ("-" if count < 0 else ""), float(abs(count)), "B"
    for larger in ("KiB", "MiB", "GiB", "TiB"):
        if size < 1024:
            break
        size, unit = size / 1024, larger
    return f"{sign}{size:.0f} {unit}" if unit == "B" else f"{sign}{size:.3g} {unit}"


def fmt_duration(seconds: float) -> str:
    """A run's wall-clock time, as the end-of-run report gives it: ``4.69 s``."""
    return f"{seconds:.2f} s"


def fmt_ms(seconds: float | None, unit: bool = True) -> str:
    """Seconds as milliseconds with two decimals, for the live table's columns of times:
    ``12.34 ms`` (``12.34`` under a header that names the unit)."""
    if seconds is None:
        return MISSING
    return f"{seconds * 1e3:.2f}" + (" ms" if unit else "")


def fmt_share(share: float | None) -> str:
    """A fraction as a whole percentage: ``45%``."""
    return MISSING if share is None else f"{share:.0%}"


def fmt_exact(value: object) -> str:
    """A value in full enough precision to see a difference: floats in 7 digits, lists whole,
    a null as ``none`` (``diff`` shows values that may differ by being null)."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.7g}" if math.isfinite(value) else str(value)
    if isinstance(value, list):
        if value and all(isinstance(v, str) for v in value):
            return " ".join(value)
        return "[" + ", ".join(fmt_exact(v) for v in value) + "]"
    return str(value)


# --- words --------------------------------------------------------------------------------


def listing(names: Sequence[str], limit: int) -> str:
    """``a, b, c +7 more``: the first few names, and how many were left out."""
    more = len(names) - limit
    return ", ".join(names[:limit]) + (f" +{more} more" if more > 0 else "")


def optimizer_label(index: int | None) -> str:
    return "none" if index is None else str(index)


def step_label(optimizer: int | None, step: int, several: bool) -> str:
    """``step 5``, or ``optimizer 1 step 5`` when the run has several optimizers."""
    return f"optimizer {optimizer_label(optimizer)} step {step}" if several else f"step {step}"


# --- layout (show and diff) ---------------------------------------------------------------


def spaced(parts: Iterable[RenderableType]) -> Group:
    """Sections one under the other, a blank line apart."""
    items: list[RenderableType] = []
    for part in parts:
        if items:
            items.append(Text(""))
        items.append(part)
    return Group(*items)


def section(title: str, body: RenderableType) -> Group:
    """A bold title over its body; unlike a table's own title it is not wrapped to the table's width."""
    return Group(Text(title, style="bold"), body)


def data_table(*headers: str, right: tuple[str, ...] = ()) -> Table:
    """The one table style of show and diff: a rule under the headers, no frame."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, collapse_padding=True)
    for header in headers:
        table.add_column(header, justify="right" if header in right else "left")
    return table

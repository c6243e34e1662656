"""``stepdbg diff --format text`` (the default): where the runs part, what else differs, the
times, the verdict, for a person, on a rich console."""

from __future__ import annotations

import math
from typing import Any

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from .. import exit_codes
from ..diff_compare import FIELDS, DiffResult
from ..style import BAD, CAUTION, GOOD, MISSING, data_table, fmt_exact, fmt_num, fmt_seconds, section, spaced
from .output import Output


def _pair(a: Any, b: Any) -> tuple[str, str]:
    """Both values as text; exact (``repr``) when 7 digits would print them the same."""
    ta, tb = fmt_exact(a), fmt_exact(b)
    if ta == tb:
        return repr(a), repr(b)
    return ta, tb


def render_runs(result: DiffResult) -> RenderableType:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    for name, run in (("A", result.run_a), ("B", result.run_b)):
        grid.add_row(name, Text(f"{run.path} · {run.outcome} · {run.steps} steps · {run.command}"))
    return grid


def render_first(result: DiffResult) -> RenderableType | None:
    first = result.comparison.first
    if first is None:
        return None
    table = data_table("field", "A", "B", "rel. diff", right=("rel. diff",))
    for diff in first.fields:
        rel = fmt_num(diff.rel)
        if diff.param is not None:
            count = first.count(diff.field)
            a, b = f"{count} parameter{'s' if count > 1 else ''} differ", ""
        elif diff.field == "calls":
            a, b = fmt_exact(diff.a), fmt_exact(diff.b)
            rel = "order only" if sorted(diff.a) == sorted(diff.b) else rel
        else:
            a, b = _pair(diff.a, diff.b)
        table.add_row(diff.field, Text(a), Text(b), rel)  # values as text, never markup: [none, 0.1] is no tag
    return section(f"The runs part at {result.where(first.optimizer, first.step)}", table)


def render_params(result: DiffResult) -> RenderableType | None:
    """The parameters whose grad norms differ most, at the first step where any does."""
    found = result.comparison.first_params
    if found is None:
        return None
    where = result.where(found.optimizer, found.step)
    same = result.comparison.first is found
    title = f"Largest grad-norm differences at {where}" if same else f"Per-parameter grad norms first differ at {where}"
    table = data_table("param", "A", "B", "rel. diff", right=("rel. diff",))
    for diff in found.params():
        table.add_row(Text(diff.param or ""), *map(Text, _pair(diff.a, diff.b)), fmt_num(diff.rel))
    return section(title, table)


def render_rest(result: DiffResult) -> RenderableType | None:
    comparison = result.comparison
    if not comparison.differing:
        return None
    table = data_table("field", "first at", "steps", right=("steps",))
    for name in FIELDS:
        counted = comparison.fields.get(name)
        if counted:
            table.add_row(name, result.where(*counted.first), str(counted.steps))
    last = [result.where(optimizer, step) for optimizer, (step, agreed) in comparison.last.items() if not agreed]
    verdict = (
        Text("They re-converge: the last common step agrees again.", style=GOOD)
        if comparison.reconverged
        else Text(f"They do not re-converge: {', '.join(last)} (the last common step) still differs.", style=CAUTION)
    )
    return spaced([section(f"{comparison.differing} of {comparison.compared} common steps differ", table), verdict])


def _bullets(title: str, items: list[str], style: str = "") -> RenderableType | None:
    if not items:
        return None
    grid = Table.grid(padding=(0, 1))
    grid.add_column()
    grid.add_column(style=style)
    for item in items:
        grid.add_row(" •", Text(item))
    return section(title, grid)


def _ratio_text(figures: dict[str, float | None]) -> str:
    """B against A in words. A phase one run never spends time in (a loop that never
    calls zero_grad) has no ratio: it is said as such."""
    a, b, ratio = figures["a"], figures["b"], figures["ratio"]
    if a is None or b is None or math.isnan(a) or math.isnan(b):
        return MISSING
    if a == b:
        return "same"
    if not a or not b:
        return f"none in {'A' if not a else 'B'}"
    if ratio is None or ratio <= 0:
        return MISSING
    if abs(ratio - 1) < 0.005:
        return "same"
    return f"{ratio:.2f}× slower" if ratio > 1 else f"{1 / ratio:.2f}× faster"


def render_timing(result: DiffResult) -> RenderableType | None:
    if not result.comparison.compared:
        return None
    table = data_table("phase", "A", "B", "B/A", right=("A", "B"))
    for phase, figures in result.comparison.timing().items():
        table.add_row(phase, fmt_seconds(figures["a"]), fmt_seconds(figures["b"]), _ratio_text(figures))
    return section("Time per step, B against A (medians; never counted as a difference)", table)


def render_verdict(result: DiffResult) -> RenderableType:
    comparison, tol = result.comparison, result.tol
    within = f"rtol {tol.rtol:g}, atol {tol.atol:g}"
    if comparison.ignore:
        within += ", ignoring " + ", ".join(comparison.ignored)
    if result.exit_code == exit_codes.OK:
        return Text(
            f"The runs agree: {comparison.compared} common steps within {within} (exit {exit_codes.OK}).",
            style=f"bold {GOOD}",
        )
    others = len(result.structure)
    other_text = f"{others} other difference{'s' if others > 1 else ''}"
    if not comparison.compared:
        text = f"{other_text}, and no step in common"
    elif not comparison.differing:
        text = f"{other_text}; the {comparison.compared} common steps agree ({within})"
    else:
        text = f"{comparison.differing} of {comparison.compared} common steps differ ({within})"
        text += f", and {other_text}" if others else ""
    return Text(f"The runs differ (exit {exit_codes.DIFFER}): {text}.", style=f"bold {BAD}")


def render(result: DiffResult) -> RenderableType:
    """The comparison, section by section; those with nothing to say are left out."""
    parts = [
        render_runs(result),
        render_first(result),
        render_params(result),
        render_rest(result),
        _bullets("Other differences", result.structure, style=CAUTION),
        _bullets("Notes (not counted)", result.notes),
        render_timing(result),
        render_verdict(result),
    ]
    return spaced(part for part in parts if part is not None)


def write(result: DiffResult, out: Output) -> None:
    out.text.print(render(result))

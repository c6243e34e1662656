"""``stepdbg show --format text`` (the default): the view of a trace for a person, on a rich console.

Laid out to read in 80 columns: the run's header, small key/value tables side by
side (they wrap onto the next line when there is no room), sparklines of up to 60
blocks that shrink to the room left, anomalies as short paragraphs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.columns import Columns
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.measure import Measurement
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from ..anomaly_view import AnomalyGroup, has_range
from ..numeric import is_finite, median
from ..show_stats import Downsampler, OptimizerStats, ShowStats, collect
from ..style import (
    BAD,
    CAUTION,
    GOOD,
    HINT,
    LINE,
    MISSING,
    data_table,
    fmt_bytes,
    fmt_num,
    fmt_seconds,
    fmt_share,
    listing,
    optimizer_label,
    section,
    severity_style,
    spaced,
    step_label,
)
from ..view import StepFilter, TraceView
from .output import Output

if TYPE_CHECKING:
    from ..show import ShowOptions

SPARK_CHARS = "▁▂▃▄▅▆▇█"
PARAMS_IN_ANOMALY = 3
MIN_SPARK_WIDTH = 20


class Sparkline:
    """A sparkline that fits the room it is given: the full width of the buckets, or less."""

    def __init__(self, line: Downsampler) -> None:
        self.line = line

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        width = len(self.line.means())
        return Measurement(min(width, MIN_SPARK_WIDTH), width)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield Text(sparkline(self.line.means(options.max_width)), style=LINE, no_wrap=True)


def sparkline(values: list[float | None]) -> str:
    """Unicode blocks from lowest to highest; a blank where a stretch had no finite value
    (or its mean overflowed)."""
    finite = [v for v in values if is_finite(v)]
    if not finite:
        return ""
    low, high = min(finite), max(finite)
    half_span = high / 2 - low / 2  # halves: the span of two finite floats may overflow, half of it never does
    top = len(SPARK_CHARS) - 1
    return "".join(
        (SPARK_CHARS[round((v / 2 - low / 2) / half_span * top) if half_span else 0] if is_finite(v) else " ")
        for v in values
    )


def _range_text(low: float | None, high: float | None) -> str:
    low_text, high_text = fmt_num(low), fmt_num(high)
    return low_text if low_text == high_text else f"{low_text}–{high_text}"


def _key_values(title: Text | None = None) -> Table:
    table = Table.grid(padding=(0, 2))
    if title:
        table.title, table.title_justify, table.title_style = title, "left", "bold"
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    return table


def render_header(shown: ShowStats) -> RenderableType:
    """The run: what ran, with which versions, when, how it ended, and the steps in view."""
    run = shown.run
    table = _key_values()
    table.add_row("trace", Text(run.path))  # text from the trace is never markup: a bracket in it stays a bracket
    table.add_row("command", Text(run.command))
    table.add_row("versions", Text(run.versions))
    table.add_row("started", Text(run.start))
    table.add_row("duration", run.duration_text)
    style = CAUTION if not run.finished else (GOOD if run.status == "ok" else BAD)
    table.add_row("status", Text(run.outcome, style=style))
    view = shown.filter.description
    table.add_row("steps", f"{run.steps} (showing {view})" if view else str(run.steps))
    return table


def _title(stats: OptimizerStats) -> Text:
    if stats.index is None:
        return Text("no optimizer (a loop of backward passes)")
    return Text(f"optimizer {stats.index} · {stats.cls}")


def render_optimizer(stats: OptimizerStats) -> RenderableType:
    table = _key_values(_title(stats))
    steps = f"{stats.steps} ({stats.first_step}–{stats.last_step})" if stats.steps else "0"
    grad_max = fmt_num(max(stats.grad_norms, default=None))
    if stats.grad_nonfinite:
        grad_max += f" (+{stats.grad_nonfinite} nan/inf)"
    for key, value in (
        ("params", str(stats.params) if stats.index is not None else MISSING),  # no optimizer: none known
        ("steps", steps),
        ("skipped", str(stats.skipped)),
        ("loss first", fmt_num(stats.loss_first)),
        ("loss last", fmt_num(stats.loss_last)),
        ("loss min", fmt_num(stats.loss_min)),
        ("grad norm median", fmt_num(median(stats.grad_norms))),
        ("grad norm max", grad_max),
        ("lr", _range_text(stats.lr_min, stats.lr_max)),
        ("update ratio median", fmt_num(median(stats.update_ratios))),
    ):
        table.add_row(key, value)
    return table


def render_optimizers(shown: ShowStats) -> RenderableType:
    if not shown.profile.steps:
        return Text("No steps in this view." if shown.filter.description else "No steps recorded.", style=CAUTION)
    return Columns([render_optimizer(stats) for stats in shown.optimizers.values()], padding=(1, 3))


def render_profile(shown: ShowStats) -> RenderableType | None:
    profile = shown.profile
    if not profile.steps:
        return None
    several = len(shown.optimizers) > 1
    table = data_table("phase", "total", "mean/step", "share", "slowest", right=("total", "mean/step", "share"))
    for phase, stats in profile.phases.items():
        at = stats.slowest_at
        if at is None:
            continue  # a phase the trace does not record
        share = profile.share(phase)
        slowest = f"{fmt_seconds(stats.slowest)} at {step_label(*at, several)}"
        table.add_row(
            phase, fmt_seconds(stats.total), fmt_seconds(stats.total / profile.steps), fmt_share(share), slowest
        )
    return section(f"time per phase (total {fmt_seconds(profile.total)} over {profile.steps} steps)", table)


def render_memory(shown: ShowStats) -> RenderableType | None:
    """First, last and peak memory at the steps' ends; on CUDA the peak is the allocator's own."""
    memory = shown.memory
    if memory.measure is None:
        return None
    growth = memory.growth
    peak = fmt_bytes(memory.peak)
    if memory.peak_at is not None:
        peak += f" at {step_label(*memory.peak_at, len(shown.optimizers) > 1)}"
    table = _key_values()
    table.add_row("first", fmt_bytes(memory.first))
    sign = "+" if growth is not None and growth >= 0 else ""
    table.add_row("last", f"{fmt_bytes(memory.last)} ({sign}{fmt_bytes(growth)})")
    table.add_row("allocator's peak" if memory.measure == "allocated" else "peak", peak)
    return section(f"memory: {memory.description} at the steps' ends", table)


def render_sparklines(shown: ShowStats) -> RenderableType | None:
    several = len(shown.optimizers) > 1
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(no_wrap=True)
    table.add_column()
    table.add_column(style=HINT, no_wrap=True)
    for stats in shown.optimizers.values():
        if not stats.steps:
            continue
        label = f"opt {optimizer_label(stats.index)}" if several else ""
        if stats.loss_line.means():
            loss = f"{fmt_num(stats.loss_first)} → {fmt_num(stats.loss_last)}"
            table.add_row(label, "loss", Sparkline(stats.loss_line), loss)
            label = ""
        if stats.grad_norms or stats.grad_nonfinite:
            grad_max = fmt_num(max(stats.grad_norms, default=None))
            table.add_row(label, "grad norm", Sparkline(stats.grad_line), f"max {grad_max}")
    memory = shown.memory
    if memory.measure is not None:
        table.add_row("", "memory", Sparkline(memory.line), f"last {fmt_bytes(memory.last)}")
    title = "loss, grad norm and memory" if memory.measure is not None else "loss and grad norm"
    title += " over the steps"
    return section(title, table) if table.row_count else None


def render_anomalies(shown: ShowStats) -> RenderableType:
    """One short paragraph per rule in view: what, where first, how often, where in the range,
    which parameter, the likely fix."""
    if not shown.anomalies:
        view = shown.filter.description
        return Text(f"No anomalies in {view}." if view else "No anomalies.", style=GOOD)
    several = len(shown.optimizers) > 1
    groups = sorted(shown.anomalies.values(), key=lambda g: g.first_step)
    return section("anomalies", spaced(_anomaly(group, several, shown.filter) for group in groups))


def _anomaly(group: AnomalyGroup, several: bool, step_filter: StepFilter) -> RenderableType:
    ranged = has_range(step_filter)
    times = "once" if group.count == 1 else f"{group.count} times"
    head = Text(group.rule, style=severity_style(group.severity))
    head.append(f" ({group.severity}) first at {step_label(group.optimizer, group.first_step, several)}, {times}")
    head.append(" in the run" if ranged else "")
    if group.params:
        head.append(f", param {listing(group.params, PARAMS_IN_ANOMALY)}")
    if ranged:
        head.append(_in_range(group, step_filter))
    lines: list[RenderableType] = [head, Padding(Text(group.message), (0, 0, 0, 2))]
    if group.hint:
        lines.append(Padding(Text(f"→ {group.hint}", style=HINT), (0, 0, 0, 2)))
    return Group(*lines)


def _in_range(group: AnomalyGroup, step_filter: StepFilter) -> str:
    """Where in the range the rule fired, as far as the trace says."""
    seen = group.in_view
    if seen is not None:
        if seen.steps == 1:
            return f"; in this range at step {seen.first_step}"
        return f"; in this range at {seen.steps} steps, {seen.first_step}–{seen.last_step}"
    if group.first_step < step_filter.start:
        return "; whether it fired in this range, the trace does not say (written by an older stepdbg, or cut short)"
    return ""


def render_params(shown: ShowStats) -> RenderableType:
    params = shown.params
    assert params is not None
    several = len({optimizer for optimizer, _ in params.stats}) > 1
    headers = ["opt"] if several else []
    headers += ["param", "steps", "median", "max", "last", "update\nratio", "trend"]
    table = data_table(*headers, right=tuple(h for h in headers if h not in ("param", "trend")))
    for column in table.columns:
        column.no_wrap = column.header != "param"
        column.overflow = "fold"
    for stats in params.stats.values():
        cells: list[RenderableType] = [optimizer_label(stats.optimizer)] if several else []
        if stats.detail_steps:
            cells += [
                Text(stats.name),
                str(stats.detail_steps),
                fmt_num(median(stats.norms)),
                fmt_num(max(stats.norms, default=None)),
                fmt_num(stats.last),
                fmt_num(median(stats.update_ratios)),
                Sparkline(stats.line),
            ]
        else:
            cells += [Text(stats.name), "0", "no gradient", "", "", "", ""]
        table.add_row(*cells)
    return section(f"grad norms of {params.pattern} on the detail steps (every {shown.run.every})", table)


def render(shown: ShowStats, anomalies_only: bool = False) -> RenderableType:
    """The view: the run's header, then the sections asked for."""
    parts: list[RenderableType | None] = [render_header(shown)]
    if shown.params is not None:
        parts.append(render_params(shown))
    elif not anomalies_only:
        parts += [render_optimizers(shown), render_profile(shown), render_memory(shown), render_sparklines(shown)]
    if anomalies_only or shown.params is None:
        parts.append(render_anomalies(shown))
    return spaced(part for part in parts if part is not None)


def write(view: TraceView, options: ShowOptions, out: Output) -> None:
    out.text.print(render(collect(view, options.param), options.anomalies_only))

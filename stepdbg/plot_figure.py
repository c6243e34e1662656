"""`stepdbg plot`'s figure: the dashboard of a run, or of several overlaid, drawn with matplotlib.

Rows: loss; grad norm (log) with each param group's; learning rate per group; update
size ‖Δθ‖/‖θ‖ on the detail steps (log); time per step stacked by phase; gradient
norm per layer over the detail steps (a heat map, log colours). One column per
optimizer. Every anomaly is a vertical line at its step, in every panel of its
optimizer's column, named by its rule on the top one; for two runs, the step where
`diff` says they part is a dashed line.

Built on matplotlib's `Figure` alone, never pyplot: no window opens, and no display
is needed (the Agg renderer draws PNG, SVG and PDF files).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullLocator

from .plot_data import (
    GRAD_NORM,
    GROUP_NORM,
    LOSS,
    LR,
    TIME,
    TIMED,
    TOTAL,
    UPDATE_RATIO,
    Divergence,
    Lines,
    OptimizerLines,
    RunLines,
)
from .style import SEVERITY_FIGURE_COLORS, fmt_num, fmt_seconds, optimizer_label
from .view import StepFilter

RUN_DASHES = ("-", (0, (5, 3)), (0, (1, 2)), (0, (6, 2, 1, 2)))
RUN_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
GROUP_COLORS = ("#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f")
PHASE_COLORS = {
    "data": "#937860",
    "forward": "#4c72b0",
    "backward": "#dd8452",
    "step": "#55a868",
    "zero_grad": "#c44e52",
    "overhead": "#8172b3",
}
PHASE_NAMES = {"overhead": "stepdbg"}
LABEL_BOX = {"facecolor": "white", "alpha": 0.75, "edgecolor": "none", "pad": 1.0}
ROWS = ("loss", "grad norm", "lr", "update", "time", "heat")
ROW_HEIGHTS = {"loss": 2.2, "grad norm": 2.2, "lr": 1.5, "update": 1.7, "time": 1.9}
COLUMN_WIDTH = 11.0
MAX_COLUMNS = 4
LABELLED_ANOMALIES = 12
"""Rule names written on the top panel per column; every anomaly still gets its line."""
HEAT_LABELS = 60
"""Beyond this many rows, the heat map names every other row (or every third...)."""
NAME_CHARS = 36
SPIKE_RATIO = 4
SPIKE_MIN_POINTS = 10
TITLE_CHARS = 110


def _short(name: str) -> str:
    """A long qualified name keeps its end, the part that tells layers apart."""
    return name if len(name) <= NAME_CHARS else "…" + name[-(NAME_CHARS - 1) :]


def _empty(ax: Axes, message: str) -> None:
    ax.text(0.5, 0.5, message, transform=ax.transAxes, ha="center", va="center", color="0.45", fontsize=9)
    ax.set_yticks([])


def _title(ax: Axes, text: str) -> None:
    ax.set_title(text, loc="left", fontsize=10)


def _line(ax: Axes, lines: Lines, name: str, **style: object) -> bool:
    """Draw one column of ``lines`` over its steps; whether it had anything to draw."""
    if not lines.finite(name):
        return False
    ax.plot(lines.steps(), lines.means(name), **style)  # type: ignore[arg-type]
    return True


def _finite_values(columns: Sequence[tuple[Lines, str]]) -> np.ndarray:
    values = np.concatenate([lines.means(name) for lines, name in columns]) if columns else np.zeros(0)
    return values[np.isfinite(values)]


def _positive(columns: Sequence[tuple[Lines, str]]) -> bool:
    """Whether a log scale can show these lines: some value above zero."""
    return bool((_finite_values(columns) > 0).any())


def _wide_range(columns: Sequence[tuple[Lines, str]]) -> bool:
    """All positive and over more than two decades: a log scale reads better."""
    values = _finite_values(columns)
    return bool(values.size) and values.min() > 0 and values.max() / values.min() > 100


class Dashboard:
    """Draws the figure: ``runs`` overlaid, one column per optimizer they have in view."""

    def __init__(
        self, runs: Sequence[RunLines], divergence: Divergence | None, step_filter: StepFilter, param: str | None
    ) -> None:
        self.runs = runs
        self.divergence = divergence
        self.filter = step_filter
        self.param = param
        found = {index for run in runs for index, lines in run.optimizers.items() if lines.per_step.rows}
        ordered = sorted(found, key=lambda i: -1 if i is None else i)
        self.columns = ordered[:MAX_COLUMNS]
        self.left_out = ordered[MAX_COLUMNS:]
        self.several = len(runs) > 1

    def color(self, run: int) -> str:
        return RUN_COLORS[run % len(RUN_COLORS)]

    def style(self, run: int) -> dict[str, Any]:
        """A run's line: its colour, and a dash pattern of its own, so that runs that agree
        (a line drawn over another) still show both."""
        return {"color": self.color(run), "ls": RUN_DASHES[run % len(RUN_DASHES)]}

    def lines(self, column: int | None) -> list[tuple[int, OptimizerLines]]:
        """(run index, lines) of every run that has this optimizer."""
        return [(i, run.optimizers[column]) for i, run in enumerate(self.runs) if column in run.optimizers]

    def figure(self) -> Figure:
        heat_rows = max((len(lines.heat.names()) for _, lines in self._first_run_columns()), default=0)
        heights = [ROW_HEIGHTS.get(row, 0.0) for row in ROWS[:-1]]
        heights.append(min(max(0.17 * heat_rows + 1.2, 2.0), 11.0) if heat_rows else 1.2)
        width = COLUMN_WIDTH + 6.0 * (len(self.columns) - 1)
        fig = Figure(figsize=(width, sum(heights) + 1.2), layout="constrained")
        grid = fig.add_gridspec(len(ROWS), len(self.columns), height_ratios=heights)
        for c, column in enumerate(self.columns):
            top = fig.add_subplot(grid[0, c])
            axes = {"loss": top}
            for r, row in enumerate(ROWS[1:], start=1):
                axes[row] = fig.add_subplot(grid[r, c], sharex=top)
            self._column(fig, column, axes)
        self._headline(fig)
        return fig

    def _first_run_columns(self) -> list[tuple[int | None, OptimizerLines]]:
        first = self.runs[0].optimizers
        return [(column, first[column]) for column in self.columns if column in first]

    def _column(self, fig: Figure, column: int | None, axes: dict[str, Axes]) -> None:
        lines = self.lines(column)
        header = ""
        if len(self.columns) > 1:
            cls = next((ln.cls for _, ln in lines if ln.cls), None)
            header = f"optimizer {optimizer_label(column)}" + (f" · {cls}" if cls else "") + " — "
        self._loss(axes["loss"], lines, header)
        self._grad_norm(axes["grad norm"], lines)
        self._lr(axes["lr"], lines, column)
        self._update(axes["update"], lines)
        self._time(axes["time"], lines)
        self._heat(fig, axes["heat"], column)
        for name, ax in axes.items():
            if name != "heat":
                ax.grid(alpha=0.25)
                ax.tick_params(labelbottom=False)
        axes["heat"].set_xlabel("step")
        axes["heat"].set_xlim(*self._step_range(lines))
        axes["heat"].xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole
        self._marks(column, axes)

    @staticmethod
    def _step_range(lines: list[tuple[int, OptimizerLines]]) -> tuple[float, float]:
        """The steps in view, from the first to the last (a lone step gets some room)."""
        steps = np.concatenate([ln.per_step.steps() for _, ln in lines])
        low, high = float(np.nanmin(steps)), float(np.nanmax(steps))
        return (low - 0.5, high + 0.5) if high - low < 1 else (low, high)

    # ---- panels --------------------------------------------------------------------------

    def _loss(self, ax: Axes, lines: list[tuple[int, OptimizerLines]], header: str) -> None:
        _title(ax, header + "loss")
        drawn = [_line(ax, ln.per_step, LOSS, lw=1.2, **self.style(i)) for i, ln in lines]
        if not any(drawn):
            _empty(ax, "no loss recorded")
        elif _wide_range([(ln.per_step, LOSS) for _, ln in lines]):
            ax.set_yscale("log")

    def _grad_norm(self, ax: Axes, lines: list[tuple[int, OptimizerLines]]) -> None:
        _title(ax, "grad norm (global, and per param group)")
        groups = max((ln.groups for _, ln in lines), default=0)
        handles = []
        for i, ln in lines:
            if _line(ax, ln.per_step, GRAD_NORM, lw=1.4, zorder=3, **self.style(i)) and i == 0:
                handles.append(Line2D([], [], color=self.color(i), lw=1.4, label="global"))
            for g in range(ln.groups if groups > 1 else 0):
                color = GROUP_COLORS[g % len(GROUP_COLORS)] if not self.several else self.color(i)
                if _line(ax, ln.per_step, f"{GROUP_NORM}{g}", color=color, lw=0.8, ls="--", alpha=0.8) and i == 0:
                    handles.append(Line2D([], [], color=color, lw=0.8, ls="--", label=f"group {g}"))
        if not any(ln.per_step.finite(GRAD_NORM) for _, ln in lines):
            _empty(ax, "no gradient norm recorded")
            return
        if _positive([(ln.per_step, GRAD_NORM) for _, ln in lines]):
            ax.set_yscale("log")
        if groups > 1:
            ax.legend(handles=handles, fontsize=7, loc="upper right", ncols=min(len(handles), 4))

    def _lr(self, ax: Axes, lines: list[tuple[int, OptimizerLines]], column: int | None) -> None:
        _title(ax, "learning rate per param group")
        groups = max((ln.groups for _, ln in lines), default=0)
        styles = ("-", "--", ":", "-.")
        for i, ln in lines:
            for g in range(ln.groups):
                color = GROUP_COLORS[g % len(GROUP_COLORS)] if not self.several else self.color(i)
                dash = styles[g % len(styles)] if self.several else "-"
                _line(ax, ln.per_step, f"{LR}{g}", color=color, lw=1.1, ls=dash, label=f"group {g}" if i == 0 else None)
        if not groups:
            _empty(ax, "no learning rate (a loop with no optimizer)" if column is None else "no learning rate recorded")
        elif groups > 1:
            ax.legend(fontsize=7, loc="upper right", ncols=min(groups, 6))

    def _update(self, ax: Axes, lines: list[tuple[int, OptimizerLines]]) -> None:
        _title(ax, "update size ‖Δθ‖/‖θ‖ (detail steps)")
        drawn = [_line(ax, ln.per_detail, UPDATE_RATIO, lw=1.0, marker=".", ms=3, **self.style(i)) for i, ln in lines]
        if not any(drawn):
            every = self.runs[0].run.every
            why = "no detail steps in view" if every else "no detail steps: the run had --every 0"
            _empty(ax, why)
        elif _positive([(ln.per_detail, UPDATE_RATIO) for _, ln in lines]):
            ax.set_yscale("log")

    def _time(self, ax: Axes, lines: list[tuple[int, OptimizerLines]]) -> None:
        totals = _finite_values([(ln.per_step, TOTAL) for _, ln in lines])
        scale, unit = (1e3, "ms") if not totals.size or totals.max() < 1 else (1.0, "s")
        if not self.several and lines:
            _title(ax, f"time per step by phase ({unit})")
            per_step = lines[0][1].per_step
            phases = {p: np.nan_to_num(per_step.means(TIME + p)) * scale for p in TIMED}
            shown = [p for p in TIMED if phases[p].any()]
            ax.stackplot(
                per_step.steps(),
                [phases[p] for p in shown],
                labels=[PHASE_NAMES.get(p, p) for p in shown],
                colors=[PHASE_COLORS.get(p, "0.6") for p in shown],
                alpha=0.85,
                lw=0,
            )
            ax.legend(fontsize=7, loc="upper right", ncols=len(shown), reverse=True)
        else:
            _title(ax, f"time per step ({unit}, all phases)")
            for i, ln in lines:
                ax.plot(ln.per_step.steps(), ln.per_step.means(TOTAL) * scale, lw=1.0, **self.style(i))
        self._clip_spikes(ax, lines, scale)

    @staticmethod
    def _clip_spikes(ax: Axes, lines: list[tuple[int, OptimizerLines]], scale: float) -> None:
        """A few slow steps (the first, a checkpoint, a busy machine) would flatten every other one:
        the scale stops at twice the 90th percentile, and the title says what went off it."""
        totals = np.concatenate([ln.per_step.means(TOTAL) for _, ln in lines])
        steps = np.concatenate([ln.per_step.steps() for _, ln in lines])
        finite = np.isfinite(totals)
        if finite.sum() < SPIKE_MIN_POINTS:
            return
        typical = float(np.percentile(totals[finite], 90))
        at = int(np.nanargmax(totals))
        slowest = float(totals[at])
        if slowest > SPIKE_RATIO * typical > 0:
            ax.set_ylim(0, 2 * typical * scale)
            ax.set_title(
                f"slowest {fmt_seconds(slowest)} at step {steps[at]:.0f}, off the scale",
                loc="right",
                fontsize=8,
                color="0.35",
            )

    def _heat(self, fig: Figure, ax: Axes, column: int | None) -> None:
        run = self.runs[0]
        lines = run.optimizers.get(column)
        rows = "layer" if self.param is None else f"parameter matching {self.param}"
        _title(ax, f"grad norm per {rows} (detail steps)" + (f" — {run.label}" if self.several else ""))
        names = lines.heat.names() if lines is not None else []
        grid = np.array([lines.heat.means(name) for name in names]) if lines is not None and names else np.zeros((0, 0))
        positive = grid[np.isfinite(grid) & (grid > 0)]
        if not positive.size:
            _empty(ax, "no per-layer gradient norms in view (detail steps: stepdbg run --every N)")
            return
        grid[~(np.isfinite(grid) & (grid > 0))] = np.nan
        edges = _edges(lines.heat.steps())  # type: ignore[union-attr]
        edges[-1] = max(edges[-1], self._step_range(self.lines(column))[1])  # the last detail step's column runs on
        mesh = ax.pcolormesh(
            edges,
            np.arange(len(names) + 1) - 0.5,
            np.ma.masked_invalid(grid),
            norm=LogNorm(vmin=float(positive.min()), vmax=float(positive.max())),
            cmap="viridis",
            shading="flat",
        )
        every = max(1, math.ceil(len(names) / HEAT_LABELS))
        ax.set_yticks(range(0, len(names), every), [_short(n) for n in names[::every]])
        ax.tick_params(axis="y", labelsize=8 if len(names) <= 30 else 7 if len(names) <= 45 else 6)
        ax.set_ylim(len(names) - 0.5, -0.5)  # the first layer on top, as in the model
        bar = fig.colorbar(mesh, ax=ax, location="bottom", fraction=0.05, pad=0.02, aspect=60, label="grad norm")
        bar.ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0), numticks=12))
        bar.ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: fmt_num(value)))
        bar.ax.xaxis.set_minor_locator(NullLocator())

    # ---- marks ------------------------------------------------------------------------------

    def _marks(self, column: int | None, axes: dict[str, Axes]) -> None:
        """Anomalies at their steps, and where two runs part."""
        top = axes["loss"]
        labelled: set[tuple[str, int]] = set()
        for run in self.runs:
            for anomaly in run.anomalies:
                if anomaly.optimizer != column:
                    continue
                color = SEVERITY_FIGURE_COLORS.get(anomaly.severity, "0.3")
                for ax in axes.values():
                    ax.axvline(anomaly.step, color=color, lw=0.9, ls=":", alpha=0.9, zorder=1)
                key = (anomaly.rule, anomaly.step)
                if key not in labelled and len(labelled) < LABELLED_ANOMALIES:
                    labelled.add(key)
                    name = f"{anomaly.rule} · {run.label}" if self.several else anomaly.rule
                    top.text(
                        anomaly.step,
                        0.97,
                        name,
                        transform=top.get_xaxis_transform(),
                        rotation=90,
                        va="top",
                        ha="right",
                        fontsize=7.5,
                        color=color,
                        bbox=LABEL_BOX,
                    )
        part = self.divergence
        if part is not None and part.optimizer == column:
            for ax in axes.values():
                ax.axvline(part.step, color="black", lw=1.0, ls="--", zorder=1)
            top.text(
                part.step,
                0.03,
                f" runs part at step {part.step}: {', '.join(part.fields)}",
                transform=top.get_xaxis_transform(),
                va="bottom",
                ha="left",
                fontsize=8,
                bbox=LABEL_BOX,
            )

    def _headline(self, fig: Figure) -> None:
        details: list[str] = []
        if self.several:
            title = " vs ".join(run.label for run in self.runs) if len(self.runs) == 2 else f"{len(self.runs)} traces"
            fig.legend(
                handles=[Line2D([], [], lw=2, label=run.label, **self.style(i)) for i, run in enumerate(self.runs)],
                loc="outside upper right",
                ncols=min(len(self.runs), 4),
                fontsize=9,
            )
        else:
            label, run = self.runs[0].label, self.runs[0].run
            title = f"{label}: {run.command}" if run.command else label
            title = title if len(title) <= TITLE_CHARS else title[: TITLE_CHARS - 1] + "…"
            details += [run.outcome, f"{run.steps} steps", run.duration_text]
        if self.filter.description:
            details.append(self.filter.description)
        if self.left_out:
            details.append(f"+{len(self.left_out)} more optimizers: --optimizer N shows one")
        unmarked = sum(run.anomalies_left_out for run in self.runs)
        if unmarked:
            details.append(f"{unmarked} more anomaly records not marked (show --anomalies lists them)")
        fig.suptitle("\n".join([title, " · ".join(details)]) if details else title, fontsize=11, x=0.01, ha="left")


def _edges(centres: np.ndarray) -> np.ndarray:
    """Column edges around the detail steps' centres, halfway between neighbours."""
    if len(centres) == 1:
        return np.array([centres[0] - 0.5, centres[0] + 0.5])
    mids = (centres[1:] + centres[:-1]) / 2
    return np.concatenate([[2 * centres[0] - mids[0]], mids, [2 * centres[-1] - mids[-1]]])


def build_figure(
    runs: Sequence[RunLines], divergence: Divergence | None, step_filter: StepFilter, param: str | None = None
) -> Figure:
    """The dashboard of ``runs`` (the first one's heat map); raises `ValueError` when no run has a step in view."""
    dashboard = Dashboard(runs, divergence, step_filter, param)
    if not dashboard.columns:
        where = f" in this view ({step_filter.description})" if step_filter.description else ""
        raise ValueError(f"no steps to plot{where}")
    return dashboard.figure()

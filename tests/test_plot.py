"""`stepdbg plot`: the dashboard's panels, marks and heat map, the files it writes, and its errors."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import Runs, Spec
from matplotlib.axes import Axes
from matplotlib.collections import QuadMesh
from matplotlib.figure import Figure
from trace_factory import write_trace
from typer.testing import CliRunner

from stepdbg.cli import app
from stepdbg.plot import PlotOptions, dashboard
from stepdbg.plot_data import Lines, layer_norms
from stepdbg.schema import Anomaly, StepRecord
from stepdbg.view import ParamMatcher

runner = CliRunner()
ACCUMULATE = Spec("bug_missing_zero_grad.py", ("accumulate",), options=("--strict",))  # shared with test_rules


def anomaly(rule: str, step: int, optimizer: int = 0, severity: str = "error") -> Anomaly:
    return Anomaly(rule, severity, step, optimizer, None, f"{rule} happened", f"fix {rule}", t=0.05 * (step + 1))


def figure_of(*paths: Path, steps: str | None = None, optimizer: int | None = None, param: str | None = None) -> Figure:
    """The figure `stepdbg plot` would write, built but not drawn."""
    return dashboard(paths, PlotOptions(steps=steps, optimizer=optimizer, param=param))


def panels(figure: Figure) -> list[Axes]:
    """The dashboard's panels, row by row within each column (colorbars left out)."""
    return [ax for ax in figure.axes if ax.get_title(loc="left")]


def texts(ax: Axes) -> list[str]:
    return [t.get_text().strip() for t in ax.texts]


# ---- binning ------------------------------------------------------------------------------


def test_lines_keep_few_bins_and_the_means() -> None:
    lines = Lines(width=10)
    values = lines.column("v")
    for step in range(10_000):
        values.append(math.nan if step % 7 == 0 else float(step))
        lines.end_row(step)
    steps, means = lines.steps(), lines.means("v")
    assert len(steps) == len(means) <= 20 and lines.rows == 10_000
    assert steps[0] < steps[-1] and np.all(np.diff(steps) > 0)
    finite = [s for s in range(10_000) if s % 7]
    assert np.nansum(means * (lines._counts["v"])) == pytest.approx(sum(finite))  # every finite value, once
    assert lines.means("never").shape == steps.shape and np.isnan(lines.means("never")).all()


def test_a_column_met_late_is_empty_before_and_gaps_stay_gaps() -> None:
    lines = Lines(width=100)
    for step in range(6):
        lines.column("a").append(float(step))
        if step >= 3:
            lines.column("late").append(10.0 * step)
        lines.end_row(step, pad=True)
    assert list(lines.means("a")) == [0, 1, 2, 3, 4, 5]
    assert np.isnan(lines.means("late")[:3]).all() and list(lines.means("late")[3:]) == [30, 40, 50]
    assert lines.names() == ["a", "late"] and lines.finite("late") and not lines.finite("absent")


def test_layers_are_the_root_of_their_parameters_squares() -> None:
    norms = {"enc.0.weight": 3.0, "enc.0.bias": 4.0, "head.weight": 1.0, "head.bias": None, "scale": 2.0}
    assert layer_norms(norms, None) == {"enc.0": 5.0, "head": 1.0, "scale": 2.0}
    assert layer_norms(norms, ParamMatcher("enc.*")) == {"enc.0.weight": 3.0, "enc.0.bias": 4.0}


# ---- the figure -----------------------------------------------------------------------------


def test_one_run_dashboard_has_every_panel_and_marks_anomalies(tmp_path: Path) -> None:
    trace = write_trace(
        tmp_path / "run.stepdbg.jsonl",
        steps=20,
        optimizers=2,
        every=2,
        anomalies=[anomaly("missing-zero-grad", 1), anomaly("unused-param", 6, optimizer=1, severity="warning")],
    )
    figure = figure_of(trace)
    axes = panels(figure)
    below = [
        "grad norm (global, and per param group)",
        "learning rate per param group",
        "update size ‖Δθ‖/‖θ‖ (detail steps)",
        "time per step by phase (ms)",
        "grad norm per layer (detail steps)",
    ]
    assert [ax.get_title(loc="left") for ax in axes] == [
        "optimizer 0 · SGD — loss",
        *below,
        "optimizer 1 · SGD — loss",
        *below,
    ]
    loss0, grad0, _, update0, time0, heat0 = axes[:6]
    steps, values = loss0.lines[0].get_data()
    assert list(steps) == list(range(20)) and list(values) == pytest.approx([2.0 / (1 + s) for s in range(20)])
    assert grad0.get_yscale() == "log" and update0.get_yscale() == "log"
    assert len(update0.lines[0].get_xdata()) == 10  # the detail steps
    assert [t.get_text() for t in time0.get_legend().get_texts()] == ["zero_grad", "step", "backward", "forward"]
    assert [t.get_text() for t in heat0.get_yticklabels()] == ["fc1", "fc2"]  # layers, from fc1.weight and fc1.bias
    assert [t.get_text() for t in axes[11].get_yticklabels()] == ["head"]
    mesh = next(c for c in heat0.collections if isinstance(c, QuadMesh))
    assert mesh.norm.__class__.__name__ == "LogNorm" and mesh.get_array().shape == (2, 10)
    assert texts(loss0) == ["missing-zero-grad"] and texts(axes[6]) == ["unused-param"]
    marks = [line.get_xdata()[0] for line in grad0.lines[1:]]
    assert marks == [1]  # an anomaly's line on every panel of its optimizer
    assert figure.get_suptitle().splitlines() == ["run: stepdbg run train.py", "ok, exit 0 · 40 steps · 1.5 s"]


def test_two_runs_are_overlaid_and_where_they_part_is_marked(tmp_path: Path) -> None:
    def halve_lr(record: StepRecord) -> None:
        if record.step >= 4:
            record.lr = [0.05]

    a = write_trace(tmp_path / "a.stepdbg.jsonl", steps=8)
    b = write_trace(tmp_path / "b.stepdbg.jsonl", steps=8, tweak=halve_lr)
    figure = figure_of(a, b)
    loss, _, lr, *_ = panels(figure)
    assert len([line for line in loss.lines if len(line.get_xdata()) == 8]) == 2
    assert [list(line.get_ydata()) for line in lr.lines if len(line.get_xdata()) == 8] == [
        [0.1] * 8,
        [0.1] * 4 + [0.05] * 4,
    ]
    assert "runs part at step 4: lr" in texts(loss)
    assert [t.get_text() for t in figure.legends[0].get_texts()] == ["a", "b"]
    assert figure.get_suptitle() == "a vs b"


def test_ranks_of_one_run_part_on_gradients_not_on_losses(tmp_path: Path) -> None:
    """Two ranks train on different batches: their losses differ by design (diff --ignore loss)."""

    def other_batch(record: StepRecord) -> None:
        record.loss = (record.loss or 0) + 0.5

    rank0 = write_trace(tmp_path / "train.rank0.stepdbg.jsonl", steps=5, rank=0)
    rank1 = write_trace(tmp_path / "train.rank1.stepdbg.jsonl", steps=5, rank=1, tweak=other_batch)
    assert not [t for t in texts(panels(figure_of(rank0, rank1))[0]) if t.startswith("runs part")]


def test_filters_and_param_glob_choose_what_is_drawn(tmp_path: Path) -> None:
    trace = write_trace(tmp_path / "run.stepdbg.jsonl", steps=20, optimizers=2, every=2)
    figure = figure_of(trace, steps="4:10", optimizer=1)
    axes = panels(figure)
    assert len(axes) == 6 and axes[0].get_title(loc="left") == "loss"
    assert list(axes[0].lines[0].get_xdata()) == [4, 5, 6, 7, 8, 9]
    assert figure.get_suptitle().endswith("steps 4:10, optimizer 1")
    heat = panels(figure_of(trace, param="fc*.weight"))[5]
    assert heat.get_title(loc="left") == "grad norm per parameter matching fc*.weight (detail steps)"
    assert [t.get_text() for t in heat.get_yticklabels()] == ["fc1.weight", "fc2.weight"]


def test_anomalies_past_the_markers_kept_are_counted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("stepdbg.plot_data.HELD_ANOMALIES", 2)
    trace = write_trace(tmp_path / "run.stepdbg.jsonl", steps=5, anomalies=[anomaly("nonfinite", s) for s in range(5)])
    figure = figure_of(trace)
    assert texts(panels(figure)[0]) == ["nonfinite", "nonfinite"]
    assert figure.get_suptitle().endswith("3 more anomaly records not marked (show --anomalies lists them)")


def test_a_run_without_detail_steps_says_so(tmp_path: Path) -> None:
    trace = write_trace(tmp_path / "run.stepdbg.jsonl", steps=5, every=0)
    axes = panels(figure_of(trace))
    assert texts(axes[3]) == ["no detail steps: the run had --every 0"]
    assert texts(axes[5]) == ["no per-layer gradient norms in view (detail steps: stepdbg run --every N)"]


@pytest.mark.uses(ACCUMULATE)
def test_a_real_run_is_drawn_with_its_anomaly(runs: Runs, tmp_path: Path) -> None:
    trace = runs.get(ACCUMULATE).trace_file(tmp_path)
    loss, grad, *_, heat = panels(figure_of(trace))
    assert texts(loss) == ["missing-zero-grad"] and grad.lines[-1].get_xdata()[0] == 1
    assert [t.get_text() for t in heat.get_yticklabels()] == ["0", "2"]  # nn.Sequential's layers
    assert len(loss.lines[0].get_xdata()) == 30


# ---- files and errors ------------------------------------------------------------------------


def test_plot_writes_png_svg_and_pdf(tmp_path: Path) -> None:
    trace = write_trace(tmp_path / "run.stepdbg.jsonl", steps=6, every=2, anomalies=[anomaly("nonfinite", 2)])
    result = runner.invoke(app, ["plot", str(trace)])  # beside the trace by default
    assert result.exit_code == 0, result.output
    png = tmp_path / "run.stepdbg.png"
    assert result.output == f"stepdbg: wrote {png}\n"
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and png.stat().st_size > 20_000
    figure = figure_of(trace)
    figure.savefig(tmp_path / "run.svg")
    figure.savefig(tmp_path / "run.pdf")
    assert "<svg" in (tmp_path / "run.svg").read_text()[:500]
    assert (tmp_path / "run.pdf").read_bytes().startswith(b"%PDF")


def test_plot_errors_are_one_line(tmp_path: Path) -> None:
    trace = write_trace(tmp_path / "run.stepdbg.jsonl", steps=3)
    empty = write_trace(tmp_path / "empty.stepdbg.jsonl", steps=0)
    cases = [
        (
            [str(trace), "-o", str(tmp_path / "run.jpg")],
            f"-o {tmp_path / 'run.jpg'}: the figure is written as .png, .svg, .pdf (by the name's ending)",
        ),
        ([str(trace), "--steps", "10:"], "no steps to plot in this view (steps 10:)"),
        ([str(empty)], "no steps to plot"),
        (
            [str(trace), "--param", "nope"],
            "no parameter matches 'nope'; the trace has fc1.weight, fc1.bias, fc2.weight, fc2.bias",
        ),
        ([str(tmp_path / "gone.jsonl")], f"{tmp_path / 'gone.jsonl'}: no such file"),
    ]
    for args, message in cases:
        result = runner.invoke(app, ["plot", *args])
        assert (result.exit_code, result.output) == (2, f"stepdbg: error: {message}\n")


def test_missing_matplotlib_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    trace = write_trace(tmp_path / "run.stepdbg.jsonl", steps=2)
    result = runner.invoke(app, ["plot", str(trace)])
    assert (result.exit_code, result.output) == (
        2,
        "stepdbg: error: stepdbg plot needs matplotlib: pip install 'stepdbg[plot]'\n",
    )
    assert not (tmp_path / "run.stepdbg.png").exists()

"""`stepdbg show`: the view, its options, JSON and CSV, and traces that went wrong."""

from __future__ import annotations

import csv
import io
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from rich.console import Console
from trace_factory import cut_last_line, replace_line, write_trace
from typer.testing import CliRunner

from stepdbg.cli import app
from stepdbg.renderers.show_text import sparkline
from stepdbg.schema import Anomaly, AnomalySteps, EndRecord, StepRecord
from stepdbg.show import ShowOptions, show_trace
from stepdbg.show_stats import Downsampler
from stepdbg.tracefile import TraceError
from stepdbg.view import parse_steps

runner = CliRunner()


def render(path: Path, **options: Any) -> str:
    buffer = io.StringIO()
    show_trace(path, ShowOptions(**options), console=Console(file=buffer, width=100, color_system=None))
    return buffer.getvalue()


def data(path: Path, **options: Any) -> str:
    out = io.StringIO()
    show_trace(path, ShowOptions(**options), out=out)
    return out.getvalue()


def anomaly(rule: str, step: int, param: str | None = None, optimizer: int = 0) -> Anomaly:
    return Anomaly(
        rule=rule,
        severity="warning",
        step=step,
        optimizer=optimizer,
        param=param,
        message=f"{rule} happened",
        hint=f"fix {rule}",
    )


@pytest.fixture
def trace(tmp_path: Path) -> Path:
    """Ten steps of two optimizers, two anomalies, an end record that counts repeats."""
    end = EndRecord(
        status="ok", exit_code=0, duration=12.5, steps=20, anomalies={"exploding-grad": 4, "unused-param": 1}
    )
    return write_trace(
        tmp_path / "run.stepdbg.jsonl",
        optimizers=2,
        anomalies=[anomaly("exploding-grad", 3), anomaly("unused-param", 6, param="head.bias", optimizer=1)],
        end=end,
    )


def test_default_view_tells_the_run_optimizers_phases_sparklines_and_anomalies(trace: Path) -> None:
    text = render(trace)
    assert "stepdbg run train.py" in text
    assert "ok, exit 0" in text
    assert "12.5 s" in text
    assert "optimizer 0 · SGD" in text and "optimizer 1 · SGD" in text
    assert "10 (0–9)" in text  # steps of each optimizer
    assert "loss first           2" in text  # 2 / (1 + 0)
    assert "loss last            0.2" in text  # 2 / (1 + 9)
    for phase in ("forward", "backward", "step", "zero_grad"):
        assert f" {phase} " in text
    assert "56%" in text  # backward: 20 of 36 ms
    assert "█" in text and "▁" in text
    assert "exploding-grad (warning) first at optimizer 0 step 3, 4 times" in text  # count from the end record
    assert "unused-param (warning) first at optimizer 1 step 6, once, param head.bias" in text
    assert "→ fix exploding-grad" in text


def test_cut_trace_keeps_every_whole_line_and_says_the_run_did_not_finish(tmp_path: Path) -> None:
    path = cut_last_line(write_trace(tmp_path / "cut.jsonl", steps=8, end=False))
    text = render(path)
    assert "not finished (no end record: killed, or still running)" in text
    assert "steps     7" in text  # the 8th step record was cut
    summary = json.loads(data(path, format="json"))
    assert summary["run"]["finished"] is False and summary["run"]["truncated"] is True
    assert summary["optimizers"][0]["last_step"] == 6


def test_cut_inside_a_multibyte_character_keeps_every_whole_line(tmp_path: Path) -> None:
    def repeats(record: StepRecord) -> None:
        record.calls = ["backward×2", "step"]

    path = write_trace(tmp_path / "cut.jsonl", tweak=repeats, end=False)
    data = path.read_bytes()
    path.write_bytes(data[: data.rfind("×".encode()) + 1])  # a killed run stopped mid-character
    assert "not finished (no end record" in render(path)


def test_trace_with_no_steps(tmp_path: Path) -> None:
    path = write_trace(tmp_path / "empty-run.jsonl", steps=0, end=EndRecord("error", 1, 0.2, 0))
    text = render(path)
    assert "No steps recorded." in text
    assert "error, exit 1" in text
    assert "No anomalies." in text


def test_crashed_script_shows_status_error(tmp_path: Path) -> None:
    path = write_trace(tmp_path / "crash.jsonl", steps=3, end=EndRecord("error", 1, 1.0, 3))
    assert "error, exit 1" in render(path)
    assert json.loads(data(path, format="json"))["run"]["status"] == "error"


def test_corrupt_middle_line_names_file_and_line(tmp_path: Path) -> None:
    path = replace_line(write_trace(tmp_path / "bad.jsonl"), 4, '{"type": "step", "optimizer": 0,')
    with pytest.raises(TraceError, match=rf"{path}:4: corrupt line"):
        render(path)
    result = runner.invoke(app, ["show", str(path)])
    assert result.exit_code == 2
    assert f"stepdbg: error: {path}:4: corrupt line" in result.stderr


@pytest.mark.parametrize(
    ("line", "field", "value"),
    [
        (4, "loss", "oops"),
        (4, "loss", True),
        (4, "grad_norm", {"a": 1}),
        (4, "lr", 0.1),
        (4, "lr", ["0.1"]),
        (4, "group_grad_norms", "x"),
        (4, "time", [1.0]),
        (4, "time", {"forward": "x"}),
        (4, "calls", "zero_grad"),
        (4, "skipped", "no"),
        (4, "optimizer", "0"),
        (3, "param_grad_norms", {"fc.weight": "x"}),
        (3, "param_update_ratios", [0.1]),
    ],
)
def test_a_field_of_the_wrong_type_is_a_corrupt_record(tmp_path: Path, line: int, field: str, value: Any) -> None:
    """Valid JSON with a value of the wrong type (hand-edited, or written by another tool)
    is named like a corrupt line, by show and by diff: never a traceback from deep inside."""
    path = write_trace(tmp_path / "bad.jsonl")
    record = json.loads(path.read_text().splitlines()[line - 1])
    record[field] = value
    replace_line(path, line, json.dumps(record))
    expected = f"stepdbg: error: {path}:{line}: corrupt step record (a field of the wrong type: {field})\n"
    for command in (["show", str(path)], ["diff", str(write_trace(tmp_path / "good.jsonl")), str(path)]):
        result = runner.invoke(app, command)
        assert (result.exit_code, result.stderr) == (2, expected), result.output


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        ("", "empty file, not a stepdbg trace"),
        ("hello\n", "not a stepdbg trace"),
        (b"\xff\xfe binary\n", ":1: not a stepdbg trace (the first line is not JSON)"),
        ('{"type":"header","schema":99}\n', "trace schema 99 is newer than this stepdbg reads"),
        ('{"type":"header","schema":true}\n', ":1: not a stepdbg trace (header has no schema version)"),
        ('{"type":"header","schema":1,"every":"x"}\n', ":1: corrupt header (invalid literal for int()"),
    ],
)
def test_unreadable_traces_exit_2_with_one_line(tmp_path: Path, content: str | bytes | None, message: str) -> None:
    path = tmp_path / "t.jsonl"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    result = runner.invoke(app, ["show", str(path)])
    assert result.exit_code == 2
    assert result.stderr.startswith("stepdbg: error:") and message in result.stderr
    assert result.stderr.count("\n") == 1


def test_json_is_standard_json_with_the_summary(tmp_path: Path) -> None:
    def nan_loss(record: StepRecord) -> None:
        if record.step == 4:
            record.loss = math.nan

    path = write_trace(tmp_path / "nan.jsonl", tweak=nan_loss, anomalies=[anomaly("nonfinite-loss", 4)])
    text = data(path, format="json")
    summary = json.loads(text, parse_constant=lambda token: pytest.fail(f"non-standard JSON token {token}"))
    (optimizer,) = summary["optimizers"]
    assert optimizer["class"] == "SGD" and optimizer["steps"] == 10 and optimizer["skipped"] == 0
    assert optimizer["loss"] == {"first": 2.0, "last": 0.2, "min": 0.2}
    assert optimizer["grad_norm"]["median"] == pytest.approx(1.45)
    assert optimizer["lr"] == {"min": 0.1, "max": 0.1}
    assert summary["time"]["phases"]["backward"]["total"] == pytest.approx(0.2)
    assert summary["anomalies"][0]["rule"] == "nonfinite-loss"
    assert summary["run"]["command"] == "stepdbg run train.py"


def test_csv_has_one_row_per_step_and_reads_back(tmp_path: Path) -> None:
    def two_groups(record: StepRecord) -> None:
        record.lr = [0.1, 0.01]
        if record.step == 2:
            record.loss = math.nan
            record.calls = ["backward×2", "step"]

    path = write_trace(tmp_path / "run.jsonl", optimizers=2, tweak=two_groups)
    text = data(path, format="csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 20
    assert rows[0]["calls"] == "zero_grad backward step" and rows[0]["lr"] == "0.1;0.01"
    frame = pd.read_csv(io.StringIO(text))
    assert list(frame.columns[:6]) == ["optimizer", "step", "t", "loss", "grad_norm", "lr"]
    assert {"time_forward", "time_backward", "time_step", "time_zero_grad", "time_total"} <= set(frame.columns)
    assert frame["skipped"].dtype == bool and not frame["skipped"].any()
    assert frame.loc[frame.step == 2, "loss"].isna().all()
    assert frame["time_backward"].sum() == pytest.approx(0.4)
    assert frame.loc[(frame.optimizer == 1) & (frame.step == 2), "calls"].item() == "backward×2 step"


def test_steps_slice_limits_every_section(tmp_path: Path) -> None:
    path = write_trace(tmp_path / "run.jsonl", anomalies=[anomaly("late", 8)])
    text = render(path, steps="2:5")
    assert "showing steps 2:5" in text and "3 (2–4)" in text
    assert "No anomalies in steps 2:5." in text  # the one at step 8 is outside
    rows = list(csv.DictReader(io.StringIO(data(path, steps="2:5", format="csv"))))
    assert [int(row["step"]) for row in rows] == [2, 3, 4]
    assert json.loads(data(path, steps="7:", format="json"))["optimizers"][0]["first_step"] == 7


def firing(rule: str, first: int, last: int, optimizer: int = 0) -> AnomalySteps:
    """A rule that fired at every step from ``first`` to ``last``."""
    return AnomalySteps(rule, optimizer, first, last, last - first + 1)


@pytest.fixture
def repeating(tmp_path: Path) -> Path:
    """missing-zero-grad from step 1 to the end; exploding-grad at steps 2 and 3 only."""
    end = EndRecord("ok", 0, 1.0, 10, anomalies={"missing-zero-grad": 9, "exploding-grad": 2})
    return write_trace(
        tmp_path / "run.jsonl",
        anomalies=[anomaly("missing-zero-grad", 1), anomaly("exploding-grad", 2)],
        anomaly_steps=[
            firing("missing-zero-grad", 1, 4),
            firing("exploding-grad", 2, 3),
            firing("missing-zero-grad", 5, 9),
        ],
        end=end,
    )


def test_a_range_shows_the_rules_that_fired_in_it_first_reported_before_it(repeating: Path) -> None:
    text = render(repeating, steps="4:7")
    assert "missing-zero-grad (warning) first at step 1, 9 times in the run; in this range at 3 steps, 4–6" in text
    assert "exploding-grad" not in text  # it stopped at step 3
    assert "in this range at step 3" in render(repeating, steps="3:4")
    assert "No anomalies in steps 10:." in render(repeating, steps="10:")
    [group] = json.loads(data(repeating, steps="4:7", format="json"))["anomalies"]
    assert (group["rule"], group["first_step"], group["count"]) == ("missing-zero-grad", 1, 9)
    assert group["in_view"] == {"steps": 3, "first_step": 4, "last_step": 6}
    [row] = csv.DictReader(io.StringIO(data(repeating, steps="4:7", anomalies_only=True, format="csv")))
    assert (row["rule"], row["step"], row["count"], row["steps_in_view"]) == ("missing-zero-grad", "1", "9", "3")


def test_the_whole_run_reads_as_before_with_every_step_a_rule_fired_at(repeating: Path) -> None:
    text = render(repeating)
    assert "missing-zero-grad (warning) first at step 1, 9 times\n" in text
    assert "exploding-grad (warning) first at step 2, 2 times\n" in text
    groups = json.loads(data(repeating, format="json"))["anomalies"]
    assert [(g["rule"], g["in_view"]) for g in groups] == [
        ("missing-zero-grad", {"steps": 9, "first_step": 1, "last_step": 9}),
        ("exploding-grad", {"steps": 2, "first_step": 2, "last_step": 3}),
    ]


def test_counts_are_the_optimizers_in_view_where_the_trace_says_where_rules_fired(tmp_path: Path) -> None:
    path = write_trace(
        tmp_path / "run.jsonl",
        optimizers=2,
        anomalies=[anomaly("nonfinite", 2), anomaly("nonfinite", 5, optimizer=1)],
        anomaly_steps=[firing("nonfinite", 2, 9), firing("nonfinite", 5, 6, optimizer=1)],
        end=EndRecord("ok", 0, 1.0, 20, anomalies={"nonfinite": 10}),
    )
    assert "first at step 5, 2 times\n" in render(path, optimizer=1)
    assert "first at optimizer 0 step 2, 10 times\n" in render(path)
    ranged = render(path, steps="5:9", optimizer=1)
    assert "first at step 5, 2 times in the run; in this range at 2 steps, 5–6" in ranged


def test_a_trace_that_does_not_say_where_rules_repeated_says_so_in_a_range(tmp_path: Path) -> None:
    """Written by an older stepdbg: only the first report, and the count in the end record."""
    end = EndRecord("ok", 0, 1.0, 10, anomalies={"missing-zero-grad": 9, "exploding-grad": 1})
    path = write_trace(
        tmp_path / "run.jsonl", anomalies=[anomaly("missing-zero-grad", 1), anomaly("exploding-grad", 2)], end=end
    )
    text = render(path, steps="4:7")
    assert "missing-zero-grad (warning) first at step 1, 9 times in the run; whether it fired in this range" in text
    assert "exploding-grad" not in text  # counted once: it never repeated
    [group] = json.loads(data(path, steps="4:7", format="json"))["anomalies"]
    assert (group["rule"], group["count"], group["in_view"]) == ("missing-zero-grad", 9, None)
    [row] = csv.DictReader(io.StringIO(data(path, steps="4:7", anomalies_only=True, format="csv")))
    assert (row["rule"], row["count"], row["steps_in_view"]) == ("missing-zero-grad", "", "")


@pytest.mark.parametrize("text", ["5", "a:b", "1:2:3", "-3:", "5:2", "4:4"])
def test_bad_steps_are_a_one_line_error(text: str) -> None:
    with pytest.raises(ValueError, match="--steps"):
        parse_steps(text)


def test_parse_steps() -> None:
    assert parse_steps(None) == (0, None)
    assert parse_steps("2:5") == (2, 5)
    assert parse_steps(":5") == (0, 5)
    assert parse_steps("100:") == (100, None)


def test_param_pattern_tables_matching_parameters(tmp_path: Path) -> None:
    path = write_trace(tmp_path / "run.jsonl", optimizers=2, every=2)
    text = render(path, param="fc*")
    assert "grad norms of fc* on the detail steps (every 2)" in text
    for name in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"):
        assert name in text
    assert "head.weight" not in text
    assert "time per phase" not in text
    params = json.loads(data(path, param="fc1.*", format="json"))["params"]
    assert [p["name"] for p in params] == ["fc1.weight", "fc1.bias"]
    assert params[0]["detail_steps"] == 5  # steps 0, 2, 4, 6, 8
    assert params[0]["first"] == pytest.approx(0.1) and params[0]["last"] == pytest.approx(0.18)
    rows = list(csv.DictReader(io.StringIO(data(path, param="head.bias", format="csv"))))
    assert [(row["step"], row["param"]) for row in rows] == [(str(s), "head.bias") for s in (0, 2, 4, 6, 8)]


def test_param_pattern_that_matches_nothing_lists_real_names(tmp_path: Path) -> None:
    path = write_trace(tmp_path / "run.jsonl")
    with pytest.raises(ValueError, match=r"no parameter matches 'encoder\.\*'; the trace has fc1\.weight, fc1\.bias"):
        render(path, param="encoder.*")
    result = runner.invoke(app, ["show", str(path), "--param", "encoder.*"])
    assert result.exit_code == 2 and "fc2.bias" in result.stderr


def test_text_from_the_trace_is_shown_as_written_never_as_markup(tmp_path: Path) -> None:
    """A command line, class or parameter name with brackets in it: rich would fail on
    ``[/x]`` and swallow ``[bold]`` if it took them for markup."""
    names = ("enc[/x].weight", "enc[bold].bias")
    path = write_trace(tmp_path / "run.jsonl", params=names, command="stepdbg run train.py --tags [/x] [bold]")
    for options in ([], ["--param", "enc*"]):
        result = runner.invoke(app, ["show", str(path), *options])
        assert result.exit_code == 0, result.output
        assert "stepdbg run train.py --tags [/x] [bold]" in result.stdout
        assert not options or all(name in result.stdout for name in names)


def test_an_error_quoting_a_name_with_a_line_break_is_still_one_line(tmp_path: Path) -> None:
    path = write_trace(tmp_path / "run.jsonl", params=("enc\nweight",))
    result = runner.invoke(app, ["show", str(path), "--param", "dec*"])
    assert (result.exit_code, result.stderr) == (
        2,
        "stepdbg: error: no parameter matches 'dec*'; the trace has enc\\nweight\n",
    )


def test_optimizer_option(tmp_path: Path) -> None:
    path = write_trace(tmp_path / "run.jsonl", optimizers=2)
    summary = json.loads(data(path, optimizer=1, format="json"))
    assert [o["optimizer"] for o in summary["optimizers"]] == [1]
    assert summary["time"]["steps"] == 10
    with pytest.raises(ValueError, match="has no optimizer 5 \\(it has 0, 1\\)"):
        render(path, optimizer=5)


def test_anomalies_only(trace: Path) -> None:
    text = render(trace, anomalies_only=True)
    assert "exploding-grad" in text and "unused-param" in text
    assert "time per phase" not in text and "optimizer 0 · SGD" not in text
    summary = json.loads(data(trace, anomalies_only=True, format="json"))
    assert [a["rule"] for a in summary["anomalies"]] == ["exploding-grad", "unused-param"]
    assert summary["anomalies"][0]["count"] == 4
    assert "optimizers" not in summary
    rows = list(csv.DictReader(io.StringIO(data(trace, anomalies_only=True, format="csv"))))
    assert [(row["rule"], row["step"], row["param"]) for row in rows] == [
        ("exploding-grad", "3", ""),
        ("unused-param", "6", "head.bias"),
    ]


def test_downsampler_keeps_fixed_memory_and_the_mean() -> None:
    line = Downsampler(width=10)
    for value in range(100_000):
        line.add(float(value))
        assert len(line.sums) < 20
    means = [mean for mean in line.means() if mean is not None]
    assert len(means) == 10
    assert means == sorted(means)
    assert means[0] < 10_000 and means[-1] > 90_000
    assert len(line.means(4)) == 4


def test_downsampler_short_runs_and_gaps() -> None:
    line = Downsampler(width=60)
    for value in (1.0, None, math.nan, 3.0):
        line.add(value)
    assert line.means() == [1.0, None, None, 3.0]
    assert sparkline(line.means()) == "▁  █"
    assert sparkline([2.0, 2.0]) == "▁▁"


def test_sparkline_of_values_near_the_float_limits() -> None:
    """Their span overflows, and so may a stretch's mean: the line is drawn all the same."""
    assert sparkline([1e308, -1e308, 0.0]) == "█▁▅"
    assert sparkline([math.inf, 1.0, 2.0]) == " ▁█"


def test_cli_show_prints_the_view_on_stdout(trace: Path) -> None:
    result = runner.invoke(app, ["show", str(trace)])
    assert result.exit_code == 0, result.output
    assert "optimizer 1 · SGD" in result.stdout and result.stderr == ""
    result = runner.invoke(app, ["show", str(trace), "--json"])
    assert json.loads(result.stdout)["run"]["steps"] == 20
    result = runner.invoke(app, ["show", str(trace), "--json", "--csv"])
    assert result.exit_code == 2 and "cannot be used together" in result.stderr


def test_format_names_the_renderer_and_the_old_flags_are_its_aliases(trace: Path) -> None:
    """``--format text|json|csv``; ``--json`` and ``--csv`` print the same as ``--format json|csv``."""
    outputs = {name: runner.invoke(app, ["show", str(trace), "--format", name]) for name in ("text", "json", "csv")}
    assert all(result.exit_code == 0 for result in outputs.values())
    assert outputs["text"].stdout == runner.invoke(app, ["show", str(trace)]).stdout
    assert outputs["json"].stdout == runner.invoke(app, ["show", str(trace), "--json"]).stdout
    assert outputs["csv"].stdout == runner.invoke(app, ["show", str(trace), "--csv"]).stdout
    assert runner.invoke(app, ["show", str(trace), "--format", "json", "--json"]).stdout == outputs["json"].stdout
    for args, error in [
        (["--format", "xml"], "unknown format xml for --format (valid: text, json, csv)"),
        (["--format", "text", "--csv"], "--csv and --format text cannot be used together"),
    ]:
        result = runner.invoke(app, ["show", str(trace), *args])
        assert (result.exit_code, result.stderr) == (2, f"stepdbg: error: {error}\n")


def test_a_loop_without_optimizer_is_shown_without_a_parameter_count(tmp_path: Path) -> None:
    """No optimizer, no parameter list: the count is unknown, not 0."""

    def no_optimizer(record: StepRecord) -> None:
        record.optimizer, record.lr, record.group_grad_norms = None, [], []

    path = write_trace(tmp_path / "scratch.stepdbg.jsonl", optimizers=1, every=0, tweak=no_optimizer)
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(line for line in lines if '"type":"optimizer"' not in line))
    text = render(path)
    assert "no optimizer (a loop of" in text
    params_row = next(line for line in text.splitlines() if line.startswith("params"))
    assert params_row.split() == ["params", "–"]


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
@pytest.mark.parametrize("command", [["show"], ["show", "--csv"], ["diff", "--json"]])
def test_output_that_cannot_be_written_is_one_line_and_exit_2(tmp_path: Path, command: list[str]) -> None:
    """A full disk: one line, and 2 (for diff, trouble; never 1, "the runs differ")."""
    trace = str(write_trace(tmp_path / "t.jsonl", steps=3000))
    traces = [trace, trace] if command[0] == "diff" else [trace]
    with open("/dev/full", "w") as full:
        proc = subprocess.run(
            [sys.executable, "-m", "stepdbg", *command, *traces], stdout=full, stderr=subprocess.PIPE, text=True
        )
    assert (proc.returncode, proc.stderr) == (2, "stepdbg: error: cannot write the output (No space left on device)\n")


def _waits_and_memory(record: StepRecord) -> None:
    """A newer trace's step: 6 ms of the 36 waiting for data, RSS growing 1 MiB a step."""
    record.time = {**record.time, "data": 0.006, "forward": 0.004}
    record.memory = {"rss": (100 + record.step) << 20}


def test_the_data_phase_and_memory_are_shown_where_the_trace_has_them(tmp_path: Path) -> None:
    path = write_trace(tmp_path / "data.jsonl", tweak=_waits_and_memory)
    text = "\n".join(line.rstrip() for line in render(path).splitlines())
    assert " data " in text and "17%" in text  # 6 of 36 ms
    assert (
        "memory: resident memory (RSS) at the steps' ends\n"
        "first  100 MiB\nlast   109 MiB (+9 MiB)\npeak   109 MiB at step 9\n"
    ) in text
    summary = json.loads(data(path, format="json"))
    assert summary["time"]["phases"]["data"]["share"] == pytest.approx(6 / 36)
    assert summary["memory"] == {
        "measure": "rss",
        "first": 100 << 20,
        "last": 109 << 20,
        "growth": 9 << 20,
        "peak": 109 << 20,
        "peak_step": 9,
        "peak_optimizer": 0,
    }
    rows = list(csv.DictReader(io.StringIO(data(path, format="csv"))))
    assert [(row["time_data"], row["memory"], row["memory_peak"]) for row in rows[:2]] == [
        ("0.006", str(100 << 20), ""),
        ("0.006", str(101 << 20), ""),
    ]


def test_a_trace_from_before_the_data_phase_shows_none(trace: Path) -> None:
    """Its forward holds the data waits: a data row of zeros would say there were none."""
    assert " data " not in render(trace)
    summary = json.loads(data(trace, format="json"))
    assert "data" not in summary["time"]["phases"] and summary["memory"] is None


def test_on_cuda_the_peak_is_the_allocators_and_its_step(tmp_path: Path) -> None:
    def allocator(record: StepRecord) -> None:
        record.memory = {"allocated": 10 << 20, "peak": (50 if record.step < 4 else 80) << 20}

    shown = render(write_trace(tmp_path / "cuda.jsonl", tweak=allocator))
    text = "\n".join(line.rstrip() for line in shown.splitlines())
    assert "memory: CUDA memory allocated at the steps' ends\n" in text
    assert "last              10 MiB (+0 B)\nallocator's peak  80 MiB at step 4\n" in text

"""`stepdbg diff`: where two runs part, what else differs, and the exit codes."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from trace_factory import PARAMS, cut_last_line, replace_line, write_trace
from typer.testing import CliRunner

from stepdbg.cli import app
from stepdbg.diff import DiffOptions, diff_traces
from stepdbg.diff_compare import Tolerance
from stepdbg.schema import EndRecord, StepRecord
from stepdbg.tracefile import TraceError

runner = CliRunner()


def diff(a: Path, b: Path, **options: Any) -> tuple[int, str]:
    buffer = io.StringIO()
    code = diff_traces(a, b, DiffOptions(**options), console=Console(file=buffer, width=100, color_system=None))
    return code, buffer.getvalue()


def diff_json(a: Path, b: Path, **options: Any) -> dict[str, Any]:
    out = io.StringIO()
    code = diff_traces(a, b, DiffOptions(format="json", **options), out=out)
    result = json.loads(out.getvalue(), parse_constant=lambda token: pytest.fail(f"non-standard JSON token {token}"))
    assert result["exit_code"] == code
    return result


def from_step(first: int, **changes: Any):
    def tweak(record: StepRecord) -> None:
        if record.step >= first:
            for name, value in changes.items():
                setattr(record, name, value(record) if callable(value) else value)

    return tweak


def scale_param(record: StepRecord, name: str, factor: float) -> None:
    assert record.param_grad_norms is not None
    value = record.param_grad_norms[name]
    assert value is not None
    record.param_grad_norms[name] = factor * value


@pytest.fixture
def a(tmp_path: Path) -> Path:
    return write_trace(tmp_path / "a.jsonl")


def test_repeated_runs_agree_whatever_their_timing(tmp_path: Path, a: Path) -> None:
    b = write_trace(tmp_path / "b.jsonl", slow=1.4)
    code, text = diff(a, b)
    assert code == 0
    assert "The runs agree: 10 common steps within rtol 1e-05, atol 1e-08 (exit 0)." in text
    assert "backward" in text and "1.40× slower" in text  # timing is reported, never counted
    assert "part at" not in text


def test_a_phase_one_run_never_spends_time_in_has_no_ratio(tmp_path: Path, a: Path) -> None:
    """A reference run against one that never calls zero_grad: its zero_grad time is 0."""

    def no_zero_grad(record: StepRecord) -> None:
        record.calls = ["backward", "step"]
        record.time["zero_grad"] = 0.0

    b = write_trace(tmp_path / "b.jsonl", tweak=no_zero_grad)
    code, text = diff(a, b)
    assert code == 1 and " zero_grad   1 ms   0 µs  none in B " in text
    assert diff_json(a, b)["timing"]["zero_grad"] == {"a": 0.001, "b": 0.0, "ratio": 0.0}
    code, text = diff(b, a)
    assert code == 1 and " zero_grad   0 µs   1 ms  none in A " in text
    assert diff_json(b, a)["timing"]["zero_grad"] == {"a": 0.0, "b": 0.001, "ratio": None}


def test_lr_changed_at_step_5(tmp_path: Path, a: Path) -> None:
    b = write_trace(tmp_path / "b.jsonl", tweak=from_step(5, lr=[0.05]))
    code, text = diff(a, b)
    assert code == 1
    assert "The runs part at step 5" in text
    assert "lr     [0.1]  [0.05]        0.5" in text
    assert "5 of 10 common steps differ" in text
    assert "They do not re-converge: step 9 (the last common step) still differs." in text
    result = diff_json(a, b)
    assert result["first"]["step"] == 5
    assert result["first"]["fields"] == [{"field": "lr", "a": [0.1], "b": [0.05], "rel_diff": 0.5}]
    assert result["fields"] == {"lr": {"optimizer": 0, "first_step": 5, "steps": 5}}


def test_loss_differs_from_step_6_then_reconverges(tmp_path: Path, a: Path) -> None:
    def loss_off(record: StepRecord) -> None:
        if 6 <= record.step <= 8:
            record.loss = (record.loss or 0) * 1.01

    b = write_trace(tmp_path / "b.jsonl", tweak=loss_off)
    code, text = diff(a, b)
    assert code == 1
    assert "The runs part at step 6" in text
    assert "loss   0.2857143  0.2885714       0.01" in text
    assert "They re-converge: the last common step agrees again." in text
    result = diff_json(a, b)
    assert result["steps_differing"] == 3 and result["reconverged"] is True
    assert result["fields"]["loss"] == {"optimizer": 0, "first_step": 6, "steps": 3}


def test_tolerance_options(tmp_path: Path, a: Path) -> None:
    b = write_trace(tmp_path / "b.jsonl", tweak=from_step(0, loss=lambda r: r.loss * (1 + 1e-4)))
    assert diff(a, b)[0] == 1
    assert diff(a, b, rtol=1e-3)[0] == 0
    result = runner.invoke(app, ["diff", str(a), str(b), "--rtol", "1e-3", "--quiet"])
    assert result.exit_code == 0 and result.stdout == ""


def test_tolerance_is_relative_to_a_as_the_differences_shown(tmp_path: Path, a: Path) -> None:
    """B's loss 10% below A's: a relative difference of 0.1, inside rtol 0.105, outside 0.095."""
    b = write_trace(tmp_path / "b.jsonl", tweak=from_step(3, loss=lambda r: r.loss * 0.9))
    first = diff_json(a, b)["first"]["fields"][0]
    assert (first["field"], first["rel_diff"]) == ("loss", pytest.approx(0.1))
    assert diff(a, b, rtol=0.105, atol=0)[0] == 0
    assert diff(a, b, rtol=0.095, atol=0)[0] == 1


@pytest.mark.parametrize("option", [["--rtol", "nan"], ["--rtol", "-1"], ["--atol", "-1e-8"]])
def test_tolerances_must_be_numbers_not_below_zero(a: Path, option: list[str]) -> None:
    result = runner.invoke(app, ["diff", str(a), str(a), *option])
    assert (result.exit_code, result.stderr) == (2, "stepdbg: error: --rtol and --atol must be numbers >= 0\n")


def test_ignore_may_be_repeated(tmp_path: Path, a: Path) -> None:
    b = write_trace(tmp_path / "b.jsonl", tweak=from_step(3, loss=lambda r: r.loss * 2, lr=[0.5]))
    assert runner.invoke(app, ["diff", str(a), str(b), "--ignore", "loss"]).exit_code == 1
    assert runner.invoke(app, ["diff", str(a), str(b), "--ignore", "loss", "--ignore", "lr"]).exit_code == 0
    assert runner.invoke(app, ["diff", str(a), str(b), "--ignore", "loss,lr"]).exit_code == 0


def test_ignored_fields_are_never_counted(tmp_path: Path, a: Path) -> None:
    """--ignore loss: two DDP ranks (own batches, same gradients) agree; other fields still count."""
    b = write_trace(tmp_path / "b.jsonl", tweak=from_step(0, loss=lambda r: r.loss * 2))
    assert diff(a, b)[0] == 1
    code, text = diff(a, b, ignore=frozenset({"loss"}))
    assert code == 0
    assert "The runs agree: 10 common steps within rtol 1e-05, atol 1e-08, ignoring loss (exit 0)." in text
    result = diff_json(a, b, ignore=frozenset({"loss"}))
    assert result["ignored"] == ["loss"] and result["steps_differing"] == 0 and result["fields"] == {}
    c = write_trace(
        tmp_path / "c.jsonl", tweak=from_step(3, loss=lambda r: r.loss * 2, grad_norm=lambda r: r.grad_norm * 2)
    )
    result = diff_json(a, c, ignore=frozenset({"loss"}))
    assert result["exit_code"] == 1 and list(result["fields"]) == ["grad_norm"]
    assert result["first"]["step"] == 3 and [f["field"] for f in result["first"]["fields"]] == ["grad_norm"]
    cli = runner.invoke(app, ["diff", str(a), str(b), "--ignore", "loss,lr", "-q"])
    assert cli.exit_code == 0
    cli = runner.invoke(app, ["diff", str(a), str(b), "--ignore", "losses"])
    assert cli.exit_code == 2 and cli.stdout == ""
    assert cli.stderr.startswith("stepdbg: error: unknown field losses for --ignore (valid: calls, backward_calls,")


def test_call_order_change_shows_both_sequences(tmp_path: Path, a: Path) -> None:
    def reorder(record: StepRecord) -> None:
        if record.step == 3:
            record.calls = ["backward", "zero_grad", "step"]

    code, text = diff(a, write_trace(tmp_path / "b.jsonl", tweak=reorder))
    assert code == 1
    assert "The runs part at step 3" in text
    assert "calls  zero_grad backward step  backward zero_grad step  order only" in text
    assert "They re-converge" in text


def test_values_with_brackets_are_shown_not_taken_for_markup(tmp_path: Path, a: Path) -> None:
    """``[none, 0.1]`` looks like a rich style tag: taken for one, the value would show blank."""
    code, text = diff(a, write_trace(tmp_path / "b.jsonl", tweak=from_step(4, lr=[None, 0.1], calls=["[/x]"])))
    assert code == 1
    assert " lr     [0.1]                    [none, 0.1]" in text
    assert " calls  zero_grad backward step  [/x] " in text


def test_backward_calls_and_skipped_are_compared(tmp_path: Path, a: Path) -> None:
    b = write_trace(tmp_path / "b.jsonl", tweak=from_step(2, backward_calls=4, skipped=True, grad_norm=None))
    first = diff_json(a, b)["first"]
    assert [f["field"] for f in first["fields"]] == ["backward_calls", "skipped", "grad_norm"]
    assert first["fields"][2]["b"] is None  # None against a number is a difference


def test_param_grad_norms_largest_differences(tmp_path: Path, a: Path) -> None:
    def param_off(record: StepRecord) -> None:
        if record.step == 5:
            scale_param(record, "fc2.weight", 2)
            scale_param(record, "fc1.bias", 1.1)

    code, text = diff(a, write_trace(tmp_path / "b.jsonl", tweak=param_off))
    assert code == 1
    assert "param_grad_norms  2 parameters differ" in text
    assert "Largest grad-norm differences at step 5" in text
    assert text.index("fc2.weight") < text.index("fc1.bias")  # largest first
    params = diff_json(a, write_trace(tmp_path / "c.jsonl", tweak=param_off))["first"]["params"]
    assert [(p["param"], p["rel_diff"]) for p in params] == [
        ("fc2.weight", pytest.approx(1.0)),
        ("fc1.bias", pytest.approx(0.1)),
    ]


def test_param_differences_after_the_first_step_are_named_where_they_start(tmp_path: Path, a: Path) -> None:
    def drift(record: StepRecord) -> None:
        if record.step >= 3:
            record.loss = (record.loss or 0) + 1
        if record.step >= 5 and record.is_detail:
            scale_param(record, "fc1.weight", 10)

    code, text = diff(a, write_trace(tmp_path / "b.jsonl", tweak=drift))
    assert code == 1
    assert "The runs part at step 3" in text
    assert "Per-parameter grad norms first differ at step 5" in text


def test_different_step_counts(tmp_path: Path, a: Path) -> None:
    b = write_trace(tmp_path / "b.jsonl", steps=6)
    code, text = diff(a, b)
    assert code == 1
    assert "optimizer 0: A has 10 steps (to step 9), B has 6 steps (to step 5); 4 only in A (from step 6)" in text
    assert "The runs differ (exit 1): 1 other difference; the 6 common steps agree (rtol 1e-05, atol 1e-08)." in text


def test_renamed_parameter_is_reported_once_not_at_every_step(tmp_path: Path, a: Path) -> None:
    renamed = [name.replace("fc2", "out") for name in PARAMS]
    b = write_trace(tmp_path / "b.jsonl", params=renamed)
    code, text = diff(a, b)
    assert code == 1
    assert "optimizer 0: parameter names differ (only in A: fc2.bias, fc2.weight; only in B:" in text
    result = diff_json(a, b)
    assert result["structure"] == [
        "optimizer 0: parameter names differ (only in A: fc2.bias, fc2.weight; only in B: out.bias, out.weight)"
    ]
    assert result["steps_differing"] == 0  # the renamed parameters' norms are not compared step by step


def test_different_optimizer_counts_still_compare_the_common_one(tmp_path: Path, a: Path) -> None:
    b = write_trace(tmp_path / "b.jsonl", optimizers=2, end=EndRecord("ok", 0, 1.0, 20))
    result = diff_json(a, b)
    assert result["exit_code"] == 1
    assert result["steps_compared"] == 10 and result["steps_differing"] == 0
    assert result["structure"][0] == "optimizer 1 is only in B"


def test_cut_trace_against_a_finished_one(tmp_path: Path, a: Path) -> None:
    b = cut_last_line(write_trace(tmp_path / "b.jsonl", end=False))
    code, text = diff(a, b)
    assert code == 1
    assert "1 only in A (from step 9)" in text
    said = " ".join(text.split())  # as one line, however the table wrapped it
    assert "the runs ended differently: A ok, exit 0; B not finished (no end record: killed, or still running)" in said


def test_nan_matches_nan_and_infinities_need_equality() -> None:
    tol = Tolerance()
    assert tol.close(math.nan, math.nan)
    assert not tol.close(math.nan, 1.0)
    assert not tol.close(None, 0.0)
    assert tol.close(None, None)
    assert tol.close(math.inf, math.inf)
    assert not tol.close(math.inf, -math.inf)
    assert not tol.close(1e300, math.inf)
    assert tol.close(1.0, 1.0 + 1e-6)
    assert not tol.close(1.0, 1.0 + 1e-4)
    assert tol.close_lists([1.0, math.nan], [1.0, math.nan])
    assert not tol.close_lists([1.0], [1.0, 2.0])


def test_nan_loss_in_both_runs_agrees(tmp_path: Path) -> None:
    nan_from_4 = from_step(4, loss=math.nan, grad_norm=math.inf)
    a = write_trace(tmp_path / "a.jsonl", tweak=nan_from_4)
    b = write_trace(tmp_path / "b.jsonl", tweak=nan_from_4)
    assert diff(a, b)[0] == 0


def test_corrupt_and_missing_traces_exit_2(tmp_path: Path, a: Path) -> None:
    bad = replace_line(write_trace(tmp_path / "bad.jsonl"), 5, "{not json")
    with pytest.raises(TraceError, match=rf"{bad}:5: corrupt line"):
        diff(a, bad)
    result = runner.invoke(app, ["diff", str(a), str(bad)])
    assert result.exit_code == 2 and f"stepdbg: error: {bad}:5: corrupt line" in result.stderr
    result = runner.invoke(app, ["diff", str(a), str(tmp_path / "missing.jsonl")])
    assert result.exit_code == 2 and "missing.jsonl: no such file" in result.stderr
    newer = tmp_path / "newer.jsonl"
    newer.write_text('{"type":"header","schema":2}\n')
    result = runner.invoke(app, ["diff", str(newer), str(a)])
    assert result.exit_code == 2 and "newer than this stepdbg reads" in result.stderr


def test_nothing_to_compare_is_trouble(tmp_path: Path) -> None:
    a = write_trace(tmp_path / "a.jsonl", steps=0)
    b = write_trace(tmp_path / "b.jsonl", steps=0)
    with pytest.raises(ValueError, match="nothing to compare"):
        diff(a, b)
    assert runner.invoke(app, ["diff", str(a), str(b)]).exit_code == 2


def test_a_run_without_steps_against_one_with_steps_differs(tmp_path: Path, a: Path) -> None:
    """Not trouble (exit 2 is for two traces without a single step): the runs differ."""
    empty = write_trace(tmp_path / "empty.jsonl", steps=0)
    code, text = diff(empty, a)
    assert code == 1 and "The runs differ (exit 1): 1 other difference, and no step in common." in text


def test_cli_diff_outputs(tmp_path: Path, a: Path) -> None:
    b = write_trace(tmp_path / "b.jsonl", tweak=from_step(5, lr=[0.05]))
    result = runner.invoke(app, ["diff", str(a), str(b)])
    assert result.exit_code == 1
    assert "The runs part at step 5" in result.stdout and result.stderr == ""
    result = runner.invoke(app, ["diff", str(a), str(b), "--json"])
    assert result.exit_code == 1 and json.loads(result.stdout)["first"]["fields"][0]["field"] == "lr"
    assert runner.invoke(app, ["diff", str(a), str(b), "--format", "json"]).stdout == result.stdout
    result = runner.invoke(app, ["diff", str(a), str(b), "--format", "csv"])
    assert (result.exit_code, result.stderr) == (
        2,
        "stepdbg: error: unknown format csv for --format (valid: text, json)\n",
    )
    result = runner.invoke(app, ["diff", str(a), str(b), "--quiet"])
    assert result.exit_code == 1 and result.stdout == ""
    assert runner.invoke(app, ["diff", str(a), str(a)]).exit_code == 0


def test_multi_optimizer_steps_are_named_with_their_optimizer(tmp_path: Path) -> None:
    a = write_trace(tmp_path / "a.jsonl", optimizers=2)

    def head_lr(record: StepRecord) -> None:
        if record.optimizer == 1 and record.step >= 7:
            record.lr = [0.2]

    code, text = diff(a, write_trace(tmp_path / "b.jsonl", optimizers=2, tweak=head_lr))
    assert code == 1
    assert "The runs part at optimizer 1 step 7" in text
    assert "3 of 20 common steps differ" in text

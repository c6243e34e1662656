"""`stepdbg diff` on traces written by real `stepdbg run`s of tests/cli_scripts/seeded.py."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import Runs, Spec

SEEDED = str(Path(__file__).parent / "cli_scripts" / "seeded.py")
CLI = Callable[..., tuple[int, str, str]]
VARIANTS = {
    "a": Spec(SEEDED, options=("-q", "--every", "1")),
    "b": Spec(SEEDED, options=("-q", "--every", "1"), fresh=True),  # laid out apart from "a" in memory
    "lr": Spec(SEEDED, ("--lr-change-at", "5"), options=("-q", "--every", "1")),
    "late": Spec(SEEDED, ("--zero-grad-last",), options=("-q", "--every", "1")),
}
"""Two identical runs, one with the lr changed at step 5, one with zero_grad moved."""

pytestmark = pytest.mark.uses(*VARIANTS.values())


@pytest.fixture
def traces(runs: Runs, tmp_path: Path) -> dict[str, Path]:
    """Each variant's trace, in a folder of its own."""
    written = {}
    for name, spec in VARIANTS.items():
        run = runs.get(spec)
        assert run.proc.returncode == 0, run.describe()
        (tmp_path / name).mkdir()
        written[name] = run.trace_file(tmp_path / name)
    return written


def diff_json(stepdbg_cli: CLI, a: Path, b: Path) -> tuple[int, dict]:
    code, out, _ = stepdbg_cli("diff", "--json", str(a), str(b))
    return code, json.loads(out)


def test_identical_seeded_runs_agree(traces: dict[str, Path], stepdbg_cli: CLI) -> None:
    code, out, _ = stepdbg_cli("diff", str(traces["a"]), str(traces["b"]))
    assert code == 0, out
    assert stepdbg_cli("diff", "--quiet", str(traces["a"]), str(traces["b"])) == (0, "", "")


def test_lr_change_is_found_at_step_5_then_loss_and_grads_at_6(traces: dict[str, Path], stepdbg_cli: CLI) -> None:
    code, report = diff_json(stepdbg_cli, traces["a"], traces["lr"])
    assert code == 1
    first = report["first"]
    assert (first["optimizer"], first["step"]) == (0, 5)
    lr = next(field for field in first["fields"] if field["field"] == "lr")
    assert (lr["a"], lr["b"]) == ([0.05], [0.2])
    assert "loss" not in {field["field"] for field in first["fields"]}
    by_field = {name: field["first_step"] for name, field in report["fields"].items()}
    assert by_field["lr"] == 5
    assert by_field["loss"] == 6 and by_field["grad_norm"] == 6
    assert report["reconverged"] is False
    human = stepdbg_cli("diff", str(traces["a"]), str(traces["lr"]))[1]
    assert "step 5" in human and "lr" in human


def test_moved_zero_grad_is_a_call_order_change(traces: dict[str, Path], stepdbg_cli: CLI) -> None:
    code, report = diff_json(stepdbg_cli, traces["a"], traces["late"])
    assert code == 1
    calls = report["first"]["fields"]
    assert report["first"]["step"] == 0
    assert [c["field"] for c in calls] == ["calls"]
    assert (calls[0]["a"], calls[0]["b"]) == (["zero_grad", "backward", "step"], ["backward", "step"])
    human = stepdbg_cli("diff", str(traces["a"]), str(traces["late"]))[1]
    assert "zero_grad backward step" in human and "backward step" in human


def test_diff_on_missing_and_corrupt_traces_is_trouble(
    traces: dict[str, Path], tmp_path: Path, stepdbg_cli: CLI
) -> None:
    corrupt = tmp_path / "corrupt.jsonl"
    lines = traces["a"].read_text().splitlines()
    lines[3] = lines[3][:20]
    corrupt.write_text("\n".join(lines) + "\n")
    code, _, err = stepdbg_cli("diff", str(traces["a"]), str(corrupt))
    assert code == 2 and f"{corrupt}:4" in err
    code, _, err = stepdbg_cli("diff", str(traces["a"]), str(tmp_path / "nope.jsonl"))
    assert code == 2 and "no such file" in err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert stepdbg_cli("show", str(empty))[0] == 2

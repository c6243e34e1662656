"""`stepdbg show` of several traces: ranks side by side, the straggler and its phase, ranks out of step."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from helpers import read_trace, run_torchrun
from trace_factory import write_trace
from typer.testing import CliRunner

from stepdbg.cli import app
from stepdbg.ranks import compare_ranks
from stepdbg.schema import StepRecord
from stepdbg.view import StepFilter

runner = CliRunner()
MS = 1e-3


def ranks_of(tmp_path: Path, times: list[dict[str, float]], steps: int = 10, **options: object) -> list[Path]:
    """One trace per rank, each step of rank ``r`` taking ``times[r]`` milliseconds per phase."""

    paths = []
    for rank, phases in enumerate(times):

        def timed(record: StepRecord, phases: dict[str, float] = phases) -> None:
            record.time = {name: ms * MS for name, ms in phases.items()}
            record.time["total"] = sum(record.time.values())

        path = tmp_path / f"train.rank{rank}.stepdbg.jsonl"
        paths.append(write_trace(path, steps=steps, tweak=timed, rank=rank, **options))  # type: ignore[arg-type]
    return paths


FAST = {"data": 1, "forward": 5, "backward": 10, "step": 2, "zero_grad": 0.5}


def slow(phase: str, by: float = 50, waits_in: str | None = None) -> tuple[dict[str, float], dict[str, float]]:
    """A rank slow in ``phase`` by ``by`` ms, and a rank that waits as long for it in ``waits_in``."""
    straggler = {**FAST, phase: FAST[phase] + by}
    waiting = {**FAST, waits_in: FAST[waits_in] + by} if waits_in else dict(FAST)
    return waiting, straggler


@pytest.mark.parametrize(
    ("phase", "waits_in"),
    [
        ("forward", "backward"),
        ("data", "backward"),
        ("data", "forward"),
        ("step", "forward"),
        ("zero_grad", "backward"),
    ],
)
def test_the_straggler_is_the_rank_the_others_wait_for(tmp_path: Path, phase: str, waits_in: str) -> None:
    """Rank 1 is slow in its own work; rank 0 waits as long in a collective (backward's
    all-reduce, or the buffers DDP broadcasts in forward): every step lasts as long on both."""
    straggler = compare_ranks(ranks_of(tmp_path, list(slow(phase, waits_in=waits_in))), StepFilter()).straggler
    assert straggler is not None
    found = (straggler.label, straggler.phase, straggler.waited_in, straggler.synchronous)
    assert found == ("rank 1", phase, waits_in, True)
    assert straggler.excess == pytest.approx(50 * MS)


def test_with_more_ranks_the_others_medians_decide(tmp_path: Path) -> None:
    waiting, straggler = slow("step", waits_in="backward")
    comparison = compare_ranks(ranks_of(tmp_path, [waiting, waiting, straggler, waiting]), StepFilter())
    straggler = comparison.straggler
    assert straggler is not None and (straggler.label, straggler.phase) == ("rank 2", "step")


def test_no_straggler_within_the_margin(tmp_path: Path) -> None:
    """A rank 2 ms slower in forward, on steps of about 20 ms: within 10% of a step."""
    comparison = compare_ranks(ranks_of(tmp_path, list(slow("forward", by=1.5, waits_in="backward"))), StepFilter())
    assert comparison.straggler is None


def test_a_slower_rank_nobody_waits_for_is_not_a_straggler(tmp_path: Path) -> None:
    """Its steps are longer by what its data takes more: the ranks do not synchronize."""
    comparison = compare_ranks(ranks_of(tmp_path, list(slow("data"))), StepFilter())
    assert comparison.straggler is not None and not comparison.straggler.synchronous


def test_ranks_with_different_step_counts_are_out_of_step(tmp_path: Path) -> None:
    paths = [write_trace(tmp_path / f"t.rank{rank}.jsonl", steps=steps, rank=rank) for rank, steps in ((0, 10), (1, 7))]
    assert compare_ranks(paths, StepFilter()).step_counts == {"0": {"rank 0": 10, "rank 1": 7}}


@pytest.mark.parametrize(
    ("ddp", "differing", "reported"),
    [(True, range(10), True), (False, range(10), False), (False, (3, 4), True), (True, (), False)],
)
def test_grad_norms_differing_where_the_all_reduce_makes_them_equal(
    tmp_path: Path, ddp: bool, differing: object, reported: bool
) -> None:
    """Under DDP every rank steps on the same gradients: norms that differ mean a rank did not
    sync. Without DDP, norms that differ at every step are a sharded model's (each rank's own
    shards) or independent runs': only norms that agree at some steps and differ at others tell."""

    def unsynced(record: StepRecord) -> None:
        if record.step in differing:  # type: ignore[operator]
            record.grad_norm = 2.0 + record.step

    paths = [
        write_trace(tmp_path / "t.rank0.jsonl", rank=0, ddp=ddp),
        write_trace(tmp_path / "t.rank1.jsonl", rank=1, ddp=ddp, tweak=unsynced),
    ]
    sync = compare_ranks(paths, StepFilter()).sync
    if not reported:
        assert sync == []
        return
    [difference] = sync
    first = min(differing)  # type: ignore[type-var]
    found = (difference.optimizer, difference.differing, difference.compared, difference.first_step)
    assert found == (0, len(differing), 10, first)  # type: ignore[arg-type]
    assert difference.values == {"rank 0": pytest.approx(1.0 + 0.1 * first), "rank 1": 2.0 + first}


def test_cli_shows_ranks_side_by_side_and_names_the_straggler(tmp_path: Path) -> None:
    paths = [str(p) for p in reversed(ranks_of(tmp_path, list(slow("forward", waits_in="backward"))))]
    result = runner.invoke(app, ["show", *paths])
    assert result.exit_code == 0, result.output
    lines = [line.strip() for line in result.output.splitlines()]
    assert lines[0] == "ranks side by side (medians in ms a step, memory peak)"
    header = lines[1].split()
    assert header == ["rank", "steps", "total", "data", "fwd", "bwd", "step", "zero", "data", "%", "memory"]
    assert [line.split() for line in lines[3:5]] == [
        ["rank", "0", "10", "68.5", "1", "5", "60", "2", "0.5", "1%", "–"],
        ["rank", "1", "10", "68.5", "1", "55", "10", "2", "0.5", "1%", "–"],
    ], "in rank order"
    assert (
        "rank 1 is the straggler: its forward takes 50 ms a step more than the other ranks',"
        " and they wait for it in backward (50 ms a step)."
    ) in " ".join(lines)
    shown = runner.invoke(app, ["show", "--json", *paths]).output
    assert runner.invoke(app, ["show", "--format", "json", *paths]).output == shown
    data = json.loads(shown)
    assert [r["rank"] for r in data["ranks"]] == [0, 1]
    assert data["straggler"] == {
        "rank": "rank 1",
        "phase": "forward",
        "excess": pytest.approx(0.05),
        "waited_in": "backward",
        "wait": pytest.approx(0.05),
        "synchronous": True,
    }
    assert math.isclose(data["ranks"][1]["median"]["forward"], 0.055)
    assert data["out_of_sync"] == [] and data["step_counts"] is None


def test_traces_that_are_not_the_ranks_of_one_run_are_compared_but_name_no_straggler(tmp_path: Path) -> None:
    paths = [str(write_trace(tmp_path / f"{name}.jsonl")) for name in ("a", "b")]
    result = runner.invoke(app, ["show", *paths])
    assert result.exit_code == 0, result.output
    assert "a.jsonl" in result.output and "b.jsonl" in result.output
    assert "No straggler is named: these traces are not the ranks of one run" in result.output


@pytest.mark.parametrize("option", ["--csv", "--format=csv", "--anomalies", "--param=fc*"])
def test_one_trace_options_are_a_usage_error_with_several(tmp_path: Path, option: str) -> None:
    paths = [str(p) for p in ranks_of(tmp_path, [FAST, FAST])]
    result = runner.invoke(app, ["show", option, *paths])
    assert result.exit_code == 2
    assert result.output.strip() == (
        "stepdbg: error: several traces are compared as ranks: --csv, --param and --anomalies take one trace"
    )


def test_a_real_ddp_run_names_its_straggler_and_the_phase(tmp_path: Path) -> None:
    """torchrun, 2 CPU ranks: rank 1 sleeps 50 ms in its forward, then in its DataLoader."""
    proc = run_torchrun("ddp_straggler.py", tmp_path, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    traces = [str(tmp_path / f"ddp_straggler.rank{rank}.stepdbg.jsonl") for rank in (0, 1)]
    for steps, phase in (("1:12", "forward"), ("13:24", "data")):
        result = runner.invoke(app, ["show", "--json", "--steps", steps, *traces])
        assert result.exit_code == 0, result.output
        found = json.loads(result.output)
        straggler = found["straggler"]
        assert (straggler["rank"], straggler["phase"], straggler["synchronous"]) == ("rank 1", phase, True), found
        assert straggler["waited_in"] == "backward", found
        assert found["out_of_sync"] == [] and found["step_counts"] is None, "DDP: the same steps, the same gradients"
    assert [r.get("ddp") for r in read_trace(Path(traces[0])) if r["type"] == "optimizer"] == [True]

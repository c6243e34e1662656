"""A distributed run to check: DDP under torchrun, or started by the script with
torch.multiprocessing, one trace per rank, compared with diff."""

from __future__ import annotations

import math
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import (
    RUN_TIMEOUT,
    SCRIPTS,
    anomalies,
    read_trace,
    run_fresh,
    run_torchrun,
    script_env,
    stepdbg_lines,
    steps,
)


def test_ddp_ranks_trace_apart_and_agree_on_gradients(
    tmp_path: Path, stepdbg_cli: Callable[..., tuple[int, str, str]]
) -> None:
    proc = run_torchrun("ok_ddp_no_sync.py", tmp_path, "--every", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    ours = [line for line in proc.stderr.splitlines() if line.startswith("stepdbg")]
    assert len(ours) >= 6 and all(line.startswith(("stepdbg[rank 0]: ", "stepdbg[rank 1]: ")) for line in ours), ours
    assert sorted(line for line in ours if "no anomalies" in line) == [
        "stepdbg[rank 0]: no anomalies",
        "stepdbg[rank 1]: no anomalies",
    ]
    traces = [tmp_path / f"ok_ddp_no_sync.rank{rank}.stepdbg.jsonl" for rank in (0, 1)]
    ranks = [read_trace(path) for path in traces]
    for rank, records in enumerate(ranks):
        assert records[0]["rank"] == rank
        assert anomalies(records) == [], anomalies(records)
        records = steps(records, 0)
        assert [r["calls"] for r in records[1:]] == [["zero_grad", "backward×4", "step"]] * 11
        assert {r["backward_calls"] for r in records} == {4}
    rank0, rank1 = steps(ranks[0], 0), steps(ranks[1], 0)
    assert [r["grad_norm"] for r in rank0] == [r["grad_norm"] for r in rank1], "all-reduced gradients are the same"
    assert rank0[0]["param_grad_norms"] == rank1[0]["param_grad_norms"]
    assert all(a["loss"] != b["loss"] for a, b in zip(rank0, rank1)), "each rank has its own batches"

    assert stepdbg_cli("diff", "-q", *map(str, traces))[0] == 1  # the losses differ
    code, out, _ = stepdbg_cli("diff", "--ignore", "loss", *map(str, traces))
    assert code == 0, out
    assert "ignoring loss" in out


def test_join_shadow_steps_on_a_rank_out_of_inputs_are_no_mistake(tmp_path: Path) -> None:
    """ZeRO's Join hook steps the rank that ran out of inputs without a backward, by design."""
    proc = run_torchrun("ok_join_uneven.py", tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rank, count in ((0, 12), (1, 8)):
        records = read_trace(tmp_path / f"ok_join_uneven.rank{rank}.stepdbg.jsonl")
        assert anomalies(records) == [], anomalies(records)
        assert len([r for r in steps(records, 0) if r["backward_calls"] == 1]) == count


def test_fsdp2_ranks_trace_the_norms_of_their_shards(tmp_path: Path) -> None:
    """Sharded (DTensor) gradients: each rank's norm is of its own shards, with no collective
    of stepdbg's; the ranks' norms add up (as squares) to the global one the script measures."""
    proc = run_torchrun("ok_fsdp2.py", tmp_path, "--every", "5")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "internal error" not in proc.stderr
    expected = [float(line.split()[-1]) for line in proc.stdout.splitlines() if line.startswith("grad norm")]
    ranks = [read_trace(tmp_path / f"ok_fsdp2.rank{rank}.stepdbg.jsonl") for rank in (0, 1)]
    for records in ranks:
        assert anomalies(records) == []
        [info] = [r for r in records if r["type"] == "optimizer"]
        assert info["groups"][0]["params"] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    rank0, rank1 = steps(ranks[0], 0), steps(ranks[1], 0)
    assert len(rank0) == len(rank1) == len(expected) == 10
    for a, b, total in zip(rank0, rank1, expected):
        assert math.hypot(a["grad_norm"], b["grad_norm"]) == pytest.approx(total, rel=1e-5)
    assert rank0[5]["param_grad_norms"].keys() == {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert rank0[5]["update_ratio"] > 0


def spawn_run(tmp_path: Path, mode: str, *options: str, start: str = "spawn") -> subprocess.CompletedProcess[str]:
    argv = ["-m", "stepdbg", "run", "--no-live", *options, str(SCRIPTS / "ddp_spawn.py"), mode, start]
    return run_fresh(argv, cwd=tmp_path, env=script_env(), timeout=RUN_TIMEOUT)


@pytest.mark.parametrize(("mode", "start"), [("ok", "spawn"), ("ok", "fork"), ("os-exit", "spawn")])
def test_ranks_started_with_torch_multiprocessing_spawn_are_traced(tmp_path: Path, mode: str, start: str) -> None:
    """The DDP tutorial's way: each rank's steps in a trace of its own, named as torchrun's.
    Forked ranks inherit the main process's run, and leave it for their own; a rank that
    ends with os._exit still ends its trace."""
    proc = spawn_run(tmp_path, mode, "--strict", start=start)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout == "trained\n"
    main = read_trace(tmp_path / "ddp_spawn.stepdbg.jsonl")
    assert steps(main) == [] and main[-1]["type"] == "end"
    ranks = [read_trace(tmp_path / f"ddp_spawn.rank{rank}.stepdbg.jsonl") for rank in (0, 1)]
    for rank, records in enumerate(ranks):
        assert records[0]["rank"] == rank and records[-1]["type"] == "end" and records[-1]["status"] == "ok"
        assert anomalies(records) == []
        assert [r["step"] for r in steps(records, 0)] == list(range(10))
    assert [r["grad_norm"] for r in steps(ranks[0], 0)] == [r["grad_norm"] for r in steps(ranks[1], 0)]
    ours = [line for line in stepdbg_lines(proc.stderr) if line.startswith("stepdbg: ")]
    assert ours[0].startswith("stepdbg: 2 ranks started with torch.multiprocessing, in "), ours  # not the main process
    assert ours[1:] == [
        f"stepdbg: rank {rank}: 10 steps, no anomalies, trace {tmp_path / f'ddp_spawn.rank{rank}.stepdbg.jsonl'}"
        for rank in (0, 1)
    ]


def test_a_ranks_anomalies_are_its_own_and_count_for_strict(tmp_path: Path) -> None:
    proc = spawn_run(tmp_path, "forget-zero-grad", "--strict")
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "stepdbg[rank 1]: error missing-zero-grad (step 1, optimizer 0)" in proc.stderr
    assert proc.stderr.endswith("stepdbg: --strict: 1 error (missing-zero-grad on rank 1)\n")
    assert not [line for line in stepdbg_lines(proc.stderr) if line.startswith("stepdbg[rank 0]")], proc.stderr
    rank1 = read_trace(tmp_path / "ddp_spawn.rank1.stepdbg.jsonl")
    assert [(a["rule"], a["step"]) for a in anomalies(rank1)] == [("missing-zero-grad", 1)]
    assert anomalies(read_trace(tmp_path / "ddp_spawn.rank0.stepdbg.jsonl")) == []


def test_a_rank_that_raises_ends_its_trace_and_the_error_reaches_the_script(tmp_path: Path) -> None:
    proc = spawn_run(tmp_path, "raise")
    assert proc.returncode == 1
    assert "ValueError: rank 1 gives up" in proc.stderr
    rank1 = read_trace(tmp_path / "ddp_spawn.rank1.stepdbg.jsonl")
    assert rank1[-1]["type"] == "end" and rank1[-1]["status"] == "error" and len(steps(rank1)) == 3

"""A distributed run to check: DDP under torchrun, one trace per rank, compared with diff."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import SCRIPTS, anomalies, read_trace, script_env, steps


def test_ddp_ranks_trace_apart_and_agree_on_gradients(tmp_path: Path) -> None:
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "stepdbg", "run", "--no-live", "--strict", "--every", "1", str(SCRIPTS / "ok_ddp_no_sync.py"),
    ]
    proc = subprocess.run(command, cwd=tmp_path, env=script_env(), capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
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

    def diff(*options: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "stepdbg", "diff", *options, *map(str, traces)],
            cwd=tmp_path, env=script_env(), capture_output=True, text=True, timeout=60, check=False,
        )

    assert diff("-q").returncode == 1  # the losses differ
    agreed = diff("--ignore", "loss")
    assert agreed.returncode == 0, agreed.stdout
    assert "ignoring loss" in agreed.stdout

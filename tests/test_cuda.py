"""On a CUDA device: values read back without a host sync, right and on time.

Skipped where CUDA is not available (CI); run on a GPU machine with
``pytest tests/test_cuda.py``.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from helpers import anomalies, end, run_python, run_stepdbg, steps

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("mode", ["plain", "amp"])
def test_cuda_loop_is_traced_without_a_sync_and_unchanged(mode: str, tmp_path: Path) -> None:
    bare_out, traced_out = tmp_path / "bare.pt", tmp_path / "traced.pt"
    bare = run_python("cuda_loop.py", mode, tmp_path=tmp_path, env={"STEPDBG_TEST_OUT": str(bare_out)})
    assert bare.returncode == 0, bare.stderr
    proc, records = run_stepdbg(
        "cuda_loop.py", mode, tmp_path=tmp_path, options=("--strict",), env={"STEPDBG_TEST_OUT": str(traced_out)}
    )
    assert proc.returncode == 0, proc.stderr
    assert "internal error" not in proc.stderr  # a sync inside a hook would have raised there
    assert proc.stdout == bare.stdout
    assert end(records)["status"] == "ok"

    expected = torch.load(bare_out, weights_only=False)
    traced = torch.load(traced_out, weights_only=False)
    for name, value in expected["model"].items():
        assert torch.equal(value, traced["model"][name]), f"{name} differs under stepdbg"

    records_by_step = steps(records)
    assert [r["step"] for r in records_by_step] == list(range(25))
    skipped = [r["step"] for r in records_by_step if r["skipped"]]
    assert skipped == ([6, 13] if mode == "amp" else [])
    for record, norm in zip(records_by_step, expected["grad_norms"]):
        assert record["loss"] is not None and math.isfinite(record["loss"])
        if record["skipped"]:
            assert record["grad_norm"] is None
        else:
            assert record["grad_norm"] == pytest.approx(norm, rel=1e-4), f"step {record['step']}"
        assert record["time"]["total"] > 0
        memory = record["memory"]  # the allocator's counters, read without a sync
        assert set(memory) == {"allocated", "peak"} and 0 < memory["allocated"] <= memory["peak"], memory
    if mode == "plain":  # from the second iteration on, phases are the device's time, as the script's own events say
        for record, seconds in list(zip(records_by_step, traced["backward_seconds"]))[1:]:
            assert record["time"]["backward"] == pytest.approx(seconds, rel=0.5, abs=2e-4), f"step {record['step']}"


CASES = {
    "bf16_fused": [],
    "accumulate": [],
    "compile": [],
    "graphs": [],
    "ddp": [],
    "missing_zero_grad": [("missing-zero-grad", 1)],
    "zero_grad_before_step": [("zero-grad-before-step", 0)],
    "nonfinite": [("nonfinite", 5)],
    "ddp_bucket_view": [("missing-zero-grad", 2)],  # a step late on a device (docs/gpu.md)
    "dataloader": [],
}
"""`cuda_cases.py`'s modes, and the (rule, step) each reports first: correct loops none."""


@pytest.mark.parametrize("mode", sorted(CASES))
def test_cuda_cases_are_judged_right_without_a_sync(mode: str, tmp_path: Path) -> None:
    bare = run_python("cuda_cases.py", mode, tmp_path=tmp_path)
    assert bare.returncode == 0, bare.stderr
    proc, records = run_stepdbg("cuda_cases.py", mode, tmp_path=tmp_path, options=("--strict",))
    assert "internal error" not in proc.stderr, proc.stderr
    assert proc.stdout == bare.stdout  # same loss and parameters, bit for bit
    assert end(records)["status"] == "ok"
    assert steps(records), "no step recorded"
    if mode == "graphs":  # three warm-up steps and the captured one, whose values do not exist yet
        assert [r["loss"] is None for r in steps(records)] == [False, False, False, True]
    if mode == "dataloader":  # each fetch timed between events on the device, from the second step on
        assert all(r["time"]["data"] >= 0 for r in steps(records)) and len(steps(records)) == 12
    found = [(a["rule"], a["step"]) for a in anomalies(records) if a["severity"] != "info"]
    assert found == CASES[mode], proc.stderr
    assert proc.returncode == (3 if CASES[mode] else 0), proc.stderr
    # Not compared when compiling: on an H200 (torch 2.11) Dynamo's profile notice came out in
    # the bare run only, once Inductor's cache was off; on the CPU both runs print it (unexplained).
    if mode != "compile":
        script_stderr = [line for line in proc.stderr.splitlines() if not line.startswith("stepdbg")]
        assert script_stderr == bare.stderr.splitlines(), "stepdbg changed what the script printed (a torch warning?)"

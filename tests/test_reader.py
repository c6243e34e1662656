"""`stepdbg.load()`: a trace read back from Python, and into pandas."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
from trace_factory import cut_last_line, replace_line, write_trace

import stepdbg
from stepdbg.renderers.show_csv import STEP_COLUMNS
from stepdbg.schema import Anomaly, StepRecord

MISSING_ZERO_GRAD = Anomaly("missing-zero-grad", "error", 1, 0, "fc1.weight", "accumulated", "call zero_grad")


def nonfinite(record: StepRecord) -> None:
    if record.step == 2:
        record.loss, record.grad_norm = math.nan, -math.inf


def test_what_a_trace_says(tmp_path: Path) -> None:
    path = write_trace(tmp_path / "t.stepdbg.jsonl", steps=4, optimizers=2, anomalies=[MISSING_ZERO_GRAD])
    trace = stepdbg.load(path)
    assert trace.path == path and trace.header.command == "stepdbg run train.py"
    assert {index: info.cls for index, info in trace.optimizers.items()} == {0: "SGD", 1: "SGD"}
    assert trace.anomalies == [MISSING_ZERO_GRAD]
    assert trace.end is not None and trace.end.steps == 8 and not trace.truncated
    assert [(r.optimizer, r.step) for r in trace.steps()] == [(o, s) for s in range(4) for o in range(2)]
    assert sum(1 for _ in trace) == 2 + 8 + 1 + 1  # optimizers, steps, the anomaly, the end


def test_steps_are_streamed(tmp_path: Path) -> None:
    """A corrupt line is met only when iteration reaches it: nothing is read ahead."""
    path = replace_line(write_trace(tmp_path / "t.stepdbg.jsonl", steps=5), 6, "{not json")
    steps = stepdbg.load(path).steps()
    assert next(steps).step == 0
    with pytest.raises(stepdbg.TraceError, match=r"t\.stepdbg\.jsonl:6: corrupt line"):
        list(steps)


def test_a_killed_runs_trace(tmp_path: Path) -> None:
    trace = stepdbg.load(cut_last_line(write_trace(tmp_path / "t.stepdbg.jsonl", steps=3, end=False)))
    assert trace.end is None and trace.truncated and len(list(trace.steps())) == 2


def test_not_a_trace(tmp_path: Path) -> None:
    with pytest.raises(stepdbg.TraceError, match="no such file"):
        stepdbg.load(tmp_path / "missing.stepdbg.jsonl")
    (tmp_path / "notes.txt").write_text("hello\n")
    with pytest.raises(stepdbg.TraceError, match="not a stepdbg trace"):
        stepdbg.load(tmp_path / "notes.txt")


def test_to_pandas_one_row_per_step_nonfinite_restored(tmp_path: Path) -> None:
    pytest.importorskip("pandas")
    path = write_trace(tmp_path / "t.stepdbg.jsonl", steps=4, optimizers=2, tweak=nonfinite)
    frame = stepdbg.load(path).to_pandas()
    assert list(frame.columns) == STEP_COLUMNS and len(frame) == 8
    assert list(frame.step) == [0, 0, 1, 1, 2, 2, 3, 3] and list(frame.optimizer) == [0, 1] * 4
    at_step_2 = frame[frame.step == 2]
    assert at_step_2.loss.isna().all() and (at_step_2.grad_norm == -math.inf).all()
    assert frame.loss[0] == 2.0 and frame.calls[0] == "zero_grad backward step"
    empty = stepdbg.load(write_trace(tmp_path / "empty.stepdbg.jsonl", steps=0)).to_pandas()
    assert list(empty.columns) == STEP_COLUMNS and empty.empty


def test_to_pandas_without_pandas(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match=r"to_pandas\(\) needs pandas \(pip install pandas\)"):
        stepdbg.load(write_trace(tmp_path / "t.stepdbg.jsonl")).to_pandas()


def test_reading_imports_no_torch(tmp_path: Path) -> None:
    path = write_trace(tmp_path / "t.stepdbg.jsonl")
    code = (
        "import sys, stepdbg\n"
        f"trace = stepdbg.load({str(path)!r})\n"
        "assert len(list(trace.steps())) == 10 and trace.end is not None\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)

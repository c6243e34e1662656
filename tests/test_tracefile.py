"""The trace writer in-process: the fast step encoding, the queue behind it, and the
file it owns while it writes."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from stepdbg import tracefile
from stepdbg.ownership import TraceInUse
from stepdbg.schema import StepRecord
from stepdbg.tracefile import MAX_QUEUED, Trace, TraceWriter, encode_line, encode_step


def _record(step: int, loss: float | None = 0.25, grad_norm: float | None = 1.5) -> StepRecord:
    return StepRecord(
        optimizer=0,
        step=step,
        t=0.001 * step,
        calls=["zero_grad", "backward×2", "step"],
        backward_calls=2,
        skipped=False,
        loss=loss,
        grad_norm=grad_norm,
        group_grad_norms=[grad_norm],
        lr=[1e-3, None],
        time={"backward": 1e-4, "step": 2e-4, "zero_grad": 0.0, "forward": 3e-4, "overhead": 1e-5, "total": 6e-4},
    )


def _detail(step: int, param_norm: float, ratio: float | None = 0.01) -> StepRecord:
    record = _record(step)
    record.param_grad_norms = {"0.weight": param_norm, "0.bias": None}
    record.update_ratio = ratio
    record.param_update_ratios = {"0.weight": ratio, "0.bias": None}
    return record


@pytest.mark.parametrize(
    "record",
    [
        _record(3),
        _record(4, loss=math.nan),
        _record(5, grad_norm=math.inf),
        _record(6, loss=None, grad_norm=None),
        _record(7, loss=1e308, grad_norm=1e308),
        _detail(8, 0.5),
        _detail(9, math.nan),
        _detail(10, 0.5, math.inf),
    ],
    ids=["finite", "nan-loss", "inf-norm", "nulls", "finite-sum-overflows", "detail", "detail-nan", "detail-inf-ratio"],
)
def test_the_fast_step_encoding_writes_what_the_general_one_writes(record: StepRecord) -> None:
    fast, general = encode_step(record), encode_line(record.to_json())
    assert fast.endswith(b"\n") and fast.count(b"\n") == 1
    assert json.loads(fast) == json.loads(general)  # NaN/Inf as null plus the nonfinite flag, in both


def test_queued_records_reach_the_file_in_order_whichever_thread_writes_them(tmp_path: Path) -> None:
    """Past MAX_QUEUED the training thread drains the queue itself, while the flush thread may too."""
    path = tmp_path / "t.stepdbg.jsonl"
    writer = TraceWriter(path)
    writer.write({"type": "header", "schema": 1})
    count = MAX_QUEUED * 2 + 7
    steps = threading.Thread(target=lambda: [writer.write_step(_record(i)) for i in range(count)])
    steps.start()
    steps.join()
    writer.write({"type": "end", "status": "ok", "exit_code": 0})
    writer.close()
    assert [r.step for r in Trace(path) if isinstance(r, StepRecord)] == list(range(count))
    assert json.loads(path.read_text(encoding="utf-8").splitlines()[-1])["type"] == "end"


def test_records_a_drain_was_interrupted_in_are_written_by_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C lands on the training thread, which may be draining: nothing it had taken is lost."""
    monkeypatch.setattr(tracefile, "FLUSH_INTERVAL", 3600.0)  # only this test's drains write
    path = tmp_path / "t.stepdbg.jsonl"
    writer = TraceWriter(path)
    writer.write({"type": "header", "schema": 1})
    for step in range(5):
        writer.write_step(_record(step))
    encode = tracefile.encode_step

    def interrupted(record: StepRecord) -> bytes:
        if record.step == 3:
            raise KeyboardInterrupt
        return encode(record)

    monkeypatch.setattr(tracefile, "encode_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        writer._drain()
    monkeypatch.setattr(tracefile, "encode_step", encode)
    writer.close()
    assert [r.step for r in Trace(path) if isinstance(r, StepRecord)] == list(range(5))


def test_a_record_that_cannot_be_encoded_costs_one_line_at_close_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    writer = TraceWriter(tmp_path / "t.stepdbg.jsonl")
    writer.write({"type": "anomaly", "message": object()})  # a stepdbg bug: not JSON
    writer.close()
    err = capsys.readouterr().err
    assert err.startswith("stepdbg: cannot write the trace ") and err.count("\n") == 1


def test_a_trace_has_one_writer_and_a_killed_one_holds_nothing(tmp_path: Path) -> None:
    """Another process writing the file makes it unavailable, not emptied; once that process
    is killed (no close, no exit handler), the file is free again."""
    path = tmp_path / "t.stepdbg.jsonl"
    holds = (
        "import sys, time\nfrom pathlib import Path\nfrom stepdbg.tracefile import TraceWriter\n"
        "writer = TraceWriter(Path(sys.argv[1]))\nwriter.write({'type': 'header', 'pid': 4242})\nwriter.flush()\n"
        "print('held', flush=True)\ntime.sleep(600)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    holder = subprocess.Popen([sys.executable, "-c", holds, str(path)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(TraceInUse, match=r"^another run \(pid 4242\) is writing it$"):
            TraceWriter(path)
        assert json.loads(path.read_text()) == {"type": "header", "pid": 4242}, "the holder's trace is left alone"
    finally:
        holder.kill()
        holder.wait(timeout=60)
    writer = TraceWriter(path)
    writer.close()
    assert path.read_text() == ""


def test_a_closed_writer_lets_go_and_a_device_is_never_held(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    first = TraceWriter(path)
    with pytest.raises(TraceInUse, match=r"^another run is writing it$"):  # no header written yet: no pid to name
        TraceWriter(path)
    first.close()
    TraceWriter(path).close()
    discarded = [TraceWriter(Path(os.devnull)) for _ in range(2)]  # -o /dev/null, in two runs at once
    for writer in discarded:
        writer.close()


def test_what_the_writer_writes_for_non_finite_numbers_reads_back_as_they_were() -> None:
    """Every number field, times and a parameter named "" (its path ends in a dot) included."""
    record = _record(7, loss=math.nan)
    record.time["step"] = math.inf
    record.param_grad_norms, record.param_update_ratios = {"": -math.inf, "w": 1.0}, {"": math.nan, "w": None}
    read = StepRecord.from_json(json.loads(encode_line(record.to_json())))
    assert math.isnan(read.loss) and read.time["step"] == math.inf  # type: ignore[arg-type]
    assert read.param_grad_norms == {"": -math.inf, "w": 1.0} and read.param_update_ratios is not None
    assert math.isnan(read.param_update_ratios[""]) and read.param_update_ratios["w"] is None  # type: ignore[arg-type]


def test_a_nonfinite_flag_restores_only_a_number_written_as_null() -> None:
    """Naming another field, or a value that is there, it changes nothing: no NaN among the calls."""
    data = _record(7).to_json()
    data["nonfinite"] = {"calls": "nan", "step": "inf", "grad_norm": "nan", "lr.0": "inf", "time.forward": "nan"}
    read = StepRecord.from_json(data)
    assert (read.calls, read.step, read.grad_norm, read.lr, read.time["forward"]) == (
        ["zero_grad", "backward×2", "step"],
        7,
        1.5,
        [1e-3, None],
        3e-4,
    )


def test_a_time_written_as_null_without_a_flag_is_a_time_not_recorded() -> None:
    data = _record(7).to_json()
    data["time"]["step"] = None
    assert "step" not in StepRecord.from_json(data).time

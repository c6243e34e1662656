"""`stepdbg export`: a timeline checked against the Chrome Trace Event format, TensorBoard
events read back with tensorboard's own reader, and CSV that is show's."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from helpers import Runs, Spec
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from trace_factory import make_step, replace_line, write_trace
from typer.testing import CliRunner

from stepdbg.cli import app
from stepdbg.export.timeline import Slice, iteration_slices
from stepdbg.schema import Anomaly, StepRecord

runner = CliRunner()

ACCUMULATE = Spec("bug_missing_zero_grad.py", ("accumulate",), options=("--strict",))  # shared with test_rules
LBFGS = Spec("ok_lbfgs.py", options=("--strict",), save_state=True)  # shared with test_loops
DCGAN = Spec("ok_dcgan.py", options=("--strict",), save_state=True)
IN_BACKWARD = Spec("ok_optimizer_in_backward.py", options=("--strict",), save_state=True)

SLICE_PHASES = {"forward", "backward", "step", "zero_grad", "overhead"}
METADATA = {
    "process_name": "name",
    "process_sort_index": "sort_index",
    "thread_name": "name",
    "thread_sort_index": "sort_index",
}


def anomaly(rule: str, step: int, optimizer: int = 0, param: str | None = None) -> Anomaly:
    return Anomaly(rule, "error", step, optimizer, param, f"{rule} happened", f"fix {rule}", t=0.05 * (step + 1))


def export(*args: str) -> Any:
    return runner.invoke(app, ["export", *args])


def chrome_trace(path: Path) -> list[dict[str, Any]]:
    """The events of a Chrome trace, each checked against the Trace Event format as Perfetto's
    importer reads it: strict JSON (no NaN), a ``traceEvents`` list, every event with its ``ph``,
    ``name``, ``pid``; slices ``X`` with ``ts``, ``dur`` and ``tid``, nested, never overlapping
    on a track; counters ``C`` with numeric ``args``; instants ``i`` on a thread; metadata ``M``
    naming every process and thread that has events."""

    def no_constants(name: str) -> None:
        raise AssertionError(f"{name} is not JSON")

    data = json.loads(path.read_text(), parse_constant=no_constants)
    assert isinstance(data, dict) and isinstance(data["traceEvents"], list)
    events = data["traceEvents"]
    tracks: dict[tuple[int, int], list[tuple[float, float]]] = defaultdict(list)
    named: set[tuple[str, int, int]] = set()
    for event in events:
        assert event["ph"] in ("X", "C", "i", "M"), event
        assert isinstance(event["name"], str) and event["name"]
        assert type(event["pid"]) is int and event["pid"] > 0
        if event["ph"] == "M":
            key = METADATA[event["name"]]
            assert key in event["args"]
            named.add((event["name"], event["pid"], event["tid"]))
            continue
        assert isinstance(event["ts"], int | float) and event["ts"] >= 0
        if event["ph"] == "X":
            assert isinstance(event["dur"], int | float) and event["dur"] >= 0
            tracks[(event["pid"], event["tid"])].append((event["ts"], event["ts"] + event["dur"]))
        elif event["ph"] == "C":
            values = event["args"].values()
            assert values and all(isinstance(v, int | float) and math.isfinite(v) for v in values)
        else:
            assert event["s"] == "t" and type(event["tid"]) is int
            assert ("thread_name", event["pid"], event["tid"]) in named
    for (pid, tid), slices in tracks.items():
        assert ("process_name", pid, 0) in named and ("thread_name", pid, tid) in named
        open_ends: list[float] = []
        for start, end in sorted(slices, key=lambda s: (s[0], -s[1])):
            while open_ends and open_ends[-1] <= start + 1e-3:
                open_ends.pop()
            assert not open_ends or end <= open_ends[-1] + 1e-3, f"{start}-{end} overlaps its parent on {pid}/{tid}"
            open_ends.append(end)
    return events


def steps_and_phases(events: list[dict[str, Any]]) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Each ``step N`` slice with the phase slices right inside it (not those nested deeper)."""
    slices = sorted((e for e in events if e["ph"] == "X"), key=lambda e: (e["pid"], e["tid"], e["ts"], -e["dur"]))
    found: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
    for event in slices:
        if event["cat"] == "step":
            found.append((event, []))
        else:
            phases = found[-1][1]
            if not phases or event["ts"] >= phases[-1]["ts"] + phases[-1]["dur"] - 1e-3:
                phases.append(event)
    return found


# ---- the timeline of one record ---------------------------------------------------------


def test_placed_calls_become_slices_and_the_gaps_between_them_forward() -> None:
    record = make_step(0, 3, 0, (), spans=True)  # t = 0.2, total 36 ms
    slices = iteration_slices(record)
    start = record.t - 0.036
    assert [(s.name, s.depth) for s in slices] == [("zero_grad", 0), ("forward", 0), ("backward", 0), ("step", 0)]
    assert slices[0].start == pytest.approx(start) and slices[1].duration == pytest.approx(0.010)
    assert slices[-1].start + slices[-1].duration == pytest.approx(record.t)


def test_nested_and_stray_spans_are_nested_and_clipped() -> None:
    """A closure's calls lie inside the step; a call begun before the iteration (a step made inside
    a backward ends the record before the backward does) is cut at the iteration's edges."""
    record = make_step(0, 0, 0, ())
    record.time = {"total": 0.010}
    record.spans = [
        "backward",
        -0.002,
        0.004,
        "step",
        0.003,
        0.006,
        "zero_grad",
        0.004,
        0.001,
        "backward",
        0.005,
        0.009,
    ]
    start = record.t - 0.010
    got = [(s.name, round(s.start - start, 6), round(s.duration, 6), s.depth) for s in iteration_slices(record)]
    assert got == [
        ("backward", 0.0, 0.002, 0),
        ("forward", 0.002, 0.001, 0),
        ("step", 0.003, 0.006, 0),
        ("zero_grad", 0.004, 0.001, 1),
        ("backward", 0.005, 0.004, 1),
        ("forward", 0.009, 0.001, 0),
    ]


def test_a_record_without_spans_lays_its_phases_end_to_end_in_call_order() -> None:
    record = make_step(0, 1, 0, ())
    record.calls = ["scheduler", "zero_grad", "backward×2", "step"]
    record.time["overhead"] = 0.002
    record.time["total"] += 0.002
    slices = iteration_slices(record)
    assert [s.name for s in slices] == ["overhead", "zero_grad", "forward", "backward", "step"]
    assert all(a.start + a.duration == pytest.approx(b.start) for a, b in itertools.pairwise(slices))
    assert slices[-1].start + slices[-1].duration == pytest.approx(record.t)
    assert slices[0] == Slice("overhead", record.t - 0.038, 0.002)


def test_malformed_spans_are_one_error_line(tmp_path: Path) -> None:
    trace = write_trace(tmp_path / "run.stepdbg.jsonl", steps=2, spans=True)
    line = json.loads(trace.read_text().splitlines()[2])
    line["spans"] = ["backward", "soon", 0.1]
    replace_line(trace, 3, json.dumps(line))
    result = export(str(trace), "--to", "perfetto", "-o", str(tmp_path / "out.json"))
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == (
        f"stepdbg: error: {trace}: optimizer 0 step 0: spans is not a list of (phase, start, duration) triples"
    )
    assert not (tmp_path / "out.json").exists()


# ---- Perfetto ---------------------------------------------------------------------------


def test_perfetto_has_steps_and_phases_counters_and_anomalies(tmp_path: Path) -> None:
    trace = write_trace(
        tmp_path / "run.stepdbg.jsonl",
        steps=6,
        optimizers=2,
        spans=True,
        anomalies=[anomaly("exploding-grad", 2), anomaly("unused-param", 4, optimizer=1, param="head.bias")],
    )
    out = tmp_path / "run.json"
    result = export(str(trace), "--to", "perfetto", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert f"stepdbg: wrote {out}" in result.output
    events = chrome_trace(out)
    names = {(e["name"], e["tid"]) for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    threads = {e["args"]["name"] for e in events if e["name"] == "thread_name"}
    assert threads == {"optimizer 0 · SGD", "optimizer 1 · SGD"}
    assert len(names) == 2
    pairs = steps_and_phases(events)
    assert len(pairs) == 12
    for step, phases in pairs:
        assert [p["name"] for p in phases] == ["zero_grad", "forward", "backward", "step"]
        assert step["dur"] == pytest.approx(36_000) and sum(p["dur"] for p in phases) == pytest.approx(step["dur"])
        assert phases[0]["ts"] == pytest.approx(step["ts"])
    step0 = pairs[0][0]
    assert step0["name"] == "step 0" and step0["ts"] == pytest.approx((0.05 - 0.036) * 1e6)
    assert step0["args"]["loss"] == 2.0 and step0["args"]["calls"] == "zero_grad backward step"
    counters = defaultdict(list)
    for e in events:
        if e["ph"] == "C":
            counters[e["name"]].append(e["args"]["value"])
    assert set(counters) == {f"optimizer {i} · {what}" for i in (0, 1) for what in ("loss", "grad norm", "lr")}
    assert counters["optimizer 0 · loss"] == pytest.approx([2.0 / (1 + s) for s in range(6)])
    instants = [e for e in events if e["ph"] == "i"]
    assert [(e["name"], e["tid"], e["args"]["message"]) for e in instants] == [
        ("exploding-grad", 2, "exploding-grad happened"),
        ("unused-param", 3, "unused-param happened"),
    ]
    assert instants[1]["args"]["param"] == "head.bias"


def test_perfetto_ranks_are_processes_on_the_wall_clock(tmp_path: Path) -> None:
    rank0 = write_trace(tmp_path / "train.rank0.stepdbg.jsonl", steps=3, rank=0, start="2025-01-01T00:00:00+00:00")
    rank1 = write_trace(tmp_path / "train.rank1.stepdbg.jsonl", steps=3, rank=1, start="2025-01-01T00:00:00.250+00:00")
    out = tmp_path / "ranks.json"
    assert export(str(rank0), str(rank1), "--to", "perfetto", "-o", str(out)).exit_code == 0
    events = chrome_trace(out)
    processes = {e["pid"]: e["args"]["name"] for e in events if e["name"] == "process_name"}
    assert processes == {1: "rank 0 · train.rank0", 2: "rank 1 · train.rank1"}
    first = {pid: min(e["ts"] for e in events if e["ph"] == "X" and e["pid"] == pid) for pid in processes}
    assert first[2] - first[1] == pytest.approx(250_000)  # rank 1 started 250 ms later


def test_perfetto_steps_and_optimizer_filters(tmp_path: Path) -> None:
    trace = write_trace(tmp_path / "run.stepdbg.jsonl", steps=10, optimizers=2)
    out = tmp_path / "some.json"
    assert export(str(trace), "--to", "perfetto", "-o", str(out), "--steps", "3:5", "--optimizer", "1").exit_code == 0
    steps = [(e["tid"], e["name"]) for e in chrome_trace(out) if e["ph"] == "X" and e["cat"] == "step"]
    assert steps == [(3, "step 3"), (3, "step 4")]


@pytest.mark.uses(ACCUMULATE, LBFGS, DCGAN, IN_BACKWARD)
@pytest.mark.parametrize("spec", [ACCUMULATE, LBFGS, DCGAN, IN_BACKWARD], ids=lambda s: s.script)
def test_real_runs_make_valid_timelines(runs: Runs, spec: Spec, tmp_path: Path) -> None:
    """Accumulation (three backward passes a step), a closure (calls inside the step), two
    optimizers (a GAN), steps made inside the backward: every slice nested, every step covered."""
    run = runs.get(spec)
    trace = run.trace_file(tmp_path)
    out = tmp_path / "run.json"
    result = export(str(trace), "--to", "perfetto", "-o", str(out))
    assert result.exit_code == 0, result.output
    events = chrome_trace(out)
    pairs = steps_and_phases(events)
    assert len(pairs) == len(run.steps())
    for step, phases in pairs:
        assert {p["name"] for p in phases} <= SLICE_PHASES
        assert sum(p["dur"] for p in phases) == pytest.approx(step["dur"], abs=0.02 * step["dur"] + 5)
    if spec is ACCUMULATE:
        assert all([p["name"] for p in phases].count("backward") == 3 for _, phases in pairs)


def test_bad_exports_are_one_error_line(tmp_path: Path) -> None:
    trace = write_trace(tmp_path / "run.stepdbg.jsonl", steps=2)
    cases = [
        (
            ["--to", "perfetto", "--param", "fc*"],
            "--param has no meaning for --to perfetto (a timeline has no per-parameter figures)",
        ),
        (["--to", "csv", str(trace)], "--to csv writes one trace's table: give one trace"),
        (["--to", "perfetto", "-o", str(tmp_path)], f"{tmp_path} is a directory: -o takes the JSON file to write"),
        (["--to", "perfetto", "--optimizer", "3"], f"{trace} has no optimizer 3 (it has 0)"),
        (["--to", "perfetto", "--steps", "5:2"], "--steps 5:2 selects no steps: B must be greater than A"),
    ]
    for options, message in cases:
        result = export(str(trace), *options)
        assert (result.exit_code, result.output.strip().splitlines()[-1]) == (2, f"stepdbg: error: {message}")
    result = export(str(tmp_path / "missing.jsonl"), "--to", "perfetto")
    assert result.output.strip() == f"stepdbg: error: {tmp_path / 'missing.jsonl'}: no such file"


# ---- TensorBoard --------------------------------------------------------------------------


def read_events(run: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(run), size_guidance={"scalars": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


def test_tensorboard_scalars_and_anomaly_texts_read_back(tmp_path: Path) -> None:
    trace = write_trace(
        tmp_path / "run.stepdbg.jsonl",
        steps=10,
        optimizers=2,
        every=5,
        anomalies=[anomaly("exploding-grad", 3, param="fc1.weight")],
    )
    logdir = tmp_path / "runs"
    result = export(str(trace), "--to", "tensorboard", "-o", str(logdir))
    assert result.exit_code == 0, result.output
    assert f"stepdbg: tensorboard --logdir {logdir}" in result.output
    events = read_events(logdir / "run")
    tags = set(events.Tags()["scalars"])
    for who in ("optimizer_0", "optimizer_1"):
        assert {
            f"loss/{who}",
            f"grad_norm/{who}",
            f"grad_norm/{who}/group_0",
            f"lr/{who}/group_0",
            f"update_ratio/{who}",
        } <= tags
        assert {f"time/{who}/{phase}" for phase in ("forward", "backward", "step", "zero_grad", "total")} <= tags
    loss = events.Scalars("loss/optimizer_0")
    assert [e.step for e in loss] == list(range(10))
    assert [e.value for e in loss] == pytest.approx([2.0 / (1 + s) for s in range(10)])
    assert loss[0].wall_time == pytest.approx(1735689600.0 + 0.05)  # the header's start, plus t
    norms = events.Scalars("param_grad_norm/fc1.weight")
    assert [e.step for e in norms] == [0, 5] and [e.value for e in norms] == pytest.approx([0.1, 0.15])
    assert [e.step for e in events.Scalars("param_update_ratio/head.bias")] == [0, 5]
    texts = events.Tensors("anomalies/exploding-grad")
    assert [t.step for t in texts] == [3]
    text = texts[0].tensor_proto.string_val[0].decode()
    assert text == (
        "**exploding-grad** (error, optimizer 0, step 3, parameter `fc1.weight`): exploding-grad happened"
        "\n\nFix: fix exploding-grad"
    )


def test_tensorboard_one_run_per_rank_and_param_filter(tmp_path: Path) -> None:
    ranks = [write_trace(tmp_path / f"train.rank{r}.stepdbg.jsonl", steps=3, every=1, rank=r) for r in (0, 1)]
    logdir = tmp_path / "runs"
    assert export(*map(str, ranks), "--to", "tensorboard", "-o", str(logdir), "--param", "fc1.*").exit_code == 0
    assert sorted(p.name for p in logdir.iterdir()) == ["train.rank0", "train.rank1"]
    tags = read_events(logdir / "train.rank1").Tags()["scalars"]
    per_param = sorted(t for t in tags if t.startswith("param_grad_norm/"))
    assert per_param == ["param_grad_norm/fc1.bias", "param_grad_norm/fc1.weight"]
    again = export(str(ranks[0]), "--to", "tensorboard", "-o", str(logdir))
    assert again.exit_code == 2
    assert again.output.strip() == (
        f"stepdbg: error: {logdir / 'train.rank0'} already holds TensorBoard events: remove them, or give another -o"
    )


def test_a_tensorboard_export_that_fails_leaves_no_events(tmp_path: Path) -> None:
    trace = write_trace(tmp_path / "run.stepdbg.jsonl", steps=2, every=1)
    result = export(str(trace), "--to", "tensorboard", "-o", str(tmp_path / "runs"), "--param", "nothing*")
    assert result.exit_code == 2
    assert "no parameter matches 'nothing*'; the trace has fc1.weight" in result.output
    assert not list((tmp_path / "runs" / "run").glob("events.out.tfevents.*"))


def test_missing_tensorboard_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard raises ImportError
    trace = write_trace(tmp_path / "run.stepdbg.jsonl", steps=2)
    result = export(str(trace), "--to", "tensorboard")
    assert (result.exit_code, result.output) == (
        2,
        "stepdbg: error: stepdbg export --to tensorboard needs tensorboard: pip install 'stepdbg[tensorboard]'\n",
    )


# ---- CSV, and the reading side stays light ----------------------------------------------------


def test_csv_is_show_csv(tmp_path: Path) -> None:
    trace = write_trace(tmp_path / "run.stepdbg.jsonl", steps=6, every=2)
    for options in ([], ["--param", "fc2.*"], ["--steps", "2:4"]):
        shown = runner.invoke(app, ["show", "--csv", str(trace), *options])
        exported = export(str(trace), "--to", "csv", *options)
        assert exported.exit_code == 0 and exported.output == shown.output
    out = tmp_path / "steps.csv"
    assert export(str(trace), "--to", "csv", "-o", str(out)).exit_code == 0
    assert out.read_text() == runner.invoke(app, ["show", "--csv", str(trace)]).output


def test_exports_and_plots_never_import_torch(tmp_path: Path) -> None:
    """The reading side runs where torch is not installed (a laptop reading a cluster's traces)."""
    trace = write_trace(tmp_path / "run.stepdbg.jsonl", steps=3, every=1, spans=True)
    commands = [["export", "--to", "perfetto"], ["export", "--to", "tensorboard"]]
    script = (
        "import sys\nimport stepdbg.plot_figure\nfrom stepdbg.cli import main\n"
        f"for command in {commands!r}:\n"
        f"    sys.argv = ['stepdbg', *command, {str(trace)!r}]\n"
        "    try:\n        main()\n    except SystemExit as e:\n        assert e.code == 0, (command, e.code)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "run.stepdbg.perfetto.json").exists()
    assert list((tmp_path / "runs" / "run").glob("events.out.tfevents.*"))


def test_step_records_with_spans_round_trip() -> None:
    record = make_step(0, 0, 0, (), spans=True)
    again = StepRecord.from_json(json.loads(json.dumps(record.to_json())))
    assert list(again.placed_calls()) == [("zero_grad", 0.0, 0.001), ("backward", 0.011, 0.02), ("step", 0.031, 0.005)]
    assert list(make_step(0, 0, 0, ()).placed_calls()) == []

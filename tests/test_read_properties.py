"""`show` and `diff` on generated traces: every outcome is an exit code and at most one
error line, never a traceback; `diff` says "differ" only for runs that differ.

The examples are derandomized (the same ones on every run, in CI too) and few, so that
the file takes a few seconds; raise ``STEPDBG_HYPOTHESIS_EXAMPLES`` to search further.
"""

from __future__ import annotations

import json
import os
import traceback
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trace_factory import PARAMS, make_step, write_trace
from trace_strategies import TraceFile, corrupt, retimed, traces
from typer.testing import CliRunner, Result

from stepdbg.cli import app
from stepdbg.diagnostics import Diagnostics
from stepdbg.diff_compare import FIELDS
from stepdbg.facts import AccumulatedOnConsumed, StepFinished
from stepdbg.rules import Thresholds
from stepdbg.schema import Anomaly, AnomalySteps, EndRecord, StepRecord
from stepdbg.tracefile import Trace, TraceError

EXAMPLES = int(os.environ.get("STEPDBG_HYPOTHESIS_EXAMPLES", "0"))
FEW = settings(
    max_examples=EXAMPLES or 12,
    deadline=None,
    derandomize=not EXAMPLES,
    database=None,
    report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
runner = CliRunner()


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder for the module: every example overwrites the same files."""
    return tmp_path_factory.mktemp("generated")


def invoke(args: list[str]) -> Result:
    """Run the CLI in-process; fail with the traceback if anything but an exit escaped."""
    result = runner.invoke(app, args)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stack = "".join(traceback.format_exception(result.exception))
        pytest.fail(f"stepdbg {' '.join(args)} raised:\n{stack}")
    assert "Traceback" not in result.stdout + result.stderr
    if result.exit_code == 2:
        assert result.stderr.startswith("stepdbg: error:") and result.stderr.count("\n") == 1, result.stderr
    return result


def step_count(path: Path) -> int:
    try:
        return sum(isinstance(record, StepRecord) for record in Trace(path))
    except TraceError:
        return 0


SHOW_OPTIONS = st.tuples(
    st.sampled_from([[], ["--json"], ["--csv"]]),
    st.sampled_from([[], ["--anomalies"]]),
    st.one_of(
        st.just([]),
        st.builds(lambda a, n: ["--steps", f"{a}:{a + n}"], st.integers(0, 8), st.integers(1, 8)),
        st.sampled_from([["--steps", "3:"], ["--steps", ":2"]]),
    ),
    st.sampled_from([[], ["--param", "*"], ["--param", "fc1.*"], ["--param", "["], ["--param", "none-such"]]),
    st.sampled_from([[], ["--optimizer", "0"], ["--optimizer", "2"]]),
)


@FEW
@given(trace=traces(), options=SHOW_OPTIONS)
def test_show_reads_any_trace_a_run_could_write(folder: Path, trace: TraceFile, options: tuple[list[str], ...]) -> None:
    path = trace.write(folder / "show.jsonl")
    output, anomalies, steps, param, optimizer = options
    result = invoke(["show", str(path), *output, *anomalies, *steps, *param, *optimizer])
    if not (param or optimizer):  # the only options a valid trace can refuse
        assert result.exit_code == 0, result.stderr
    assert result.exit_code in (0, 2)
    if result.exit_code == 0 and output == ["--json"]:
        json.loads(result.stdout, parse_constant=lambda token: pytest.fail(f"non-standard JSON token {token}"))


DIFF_OPTIONS = st.tuples(
    st.sampled_from([[], ["--json"], ["-q"]]),
    st.lists(st.sampled_from(FIELDS), max_size=3).map(lambda names: [a for name in names for a in ("--ignore", name)]),
    st.sampled_from([[], ["--rtol", "0", "--atol", "0"], ["--rtol", "1"], ["--atol", "1e300"]]),
)


@FEW
@given(a=traces(), b=traces(), options=DIFF_OPTIONS)
def test_diff_compares_any_two_traces(folder: Path, a: TraceFile, b: TraceFile, options: tuple[list[str], ...]) -> None:
    path_a, path_b = a.write(folder / "a.jsonl"), b.write(folder / "b.jsonl")
    result = invoke(["diff", str(path_a), str(path_b), *(arg for option in options for arg in option)])
    if step_count(path_a) or step_count(path_b):
        assert result.exit_code in (0, 1), result.stderr
    else:
        assert result.exit_code == 2 and "nothing to compare" in result.stderr


@FEW
@given(trace=traces(), scale=st.sampled_from([0.0, 0.5, 1.0]), options=DIFF_OPTIONS)
def test_diff_of_the_same_run_timed_differently_agrees(
    folder: Path, trace: TraceFile, scale: float, options: tuple[list[str], ...]
) -> None:
    """Times are never a difference, a phase B never spends time in included (zero_grad never called)."""
    path_a = trace.write(folder / "a.jsonl")
    path_b = TraceFile(retimed(trace.lines, scale), trace.cut).write(folder / "b.jsonl")
    result = invoke(["diff", str(path_a), str(path_b), *(arg for option in options for arg in option)])
    assert result.exit_code == (0 if step_count(path_a) else 2), result.stdout


@FEW
@given(trace=corrupt(), other=traces(), options=SHOW_OPTIONS)
def test_a_spoiled_trace_is_one_error_line_or_read(
    folder: Path, trace: TraceFile, other: TraceFile, options: tuple[list[str], ...]
) -> None:
    path = trace.write(folder / "spoiled.jsonl")
    result = invoke(["show", str(path), *(arg for option in options for arg in option)])
    assert result.exit_code in (0, 2)
    result = invoke(["diff", str(path), str(other.write(folder / "other.jsonl"))])
    assert result.exit_code in (0, 1, 2)


def written_by_diagnostics(fired: set[int], steps: int, seconds: float) -> tuple[list[Anomaly], list[AnomalySteps]]:
    """What a run of ``seconds`` a step writes for missing-zero-grad firing at the steps ``fired``."""
    reports: list[Anomaly] = []
    stretches: list[AnomalySteps] = []
    diagnostics = Diagnostics(Thresholds(), frozenset(), reports.append, stretches.append)
    for step in range(steps):
        t = step * seconds
        if step in fired:
            diagnostics.judge(AccumulatedOnConsumed(0, step, None), t)
        step_record = make_step(0, step, every=0, params=PARAMS)
        diagnostics.check_step(StepFinished(step_record, list(PARAMS), None, [], lambda: None, True))
    diagnostics.close()
    return reports, stretches


@FEW
@given(
    fired=st.sets(st.integers(0, 19)),
    start=st.integers(0, 19),
    length=st.integers(1, 8),
    seconds=st.sampled_from([0.01, 0.4]),
)
def test_show_lists_a_rule_in_a_range_exactly_when_it_fired_there(
    folder: Path, fired: set[int], start: int, length: int, seconds: float
) -> None:
    reports, stretches = written_by_diagnostics(fired, 20, seconds)
    end = EndRecord("ok", 0, 1.0, 20, anomalies={"missing-zero-grad": len(fired)} if fired else {})
    path = write_trace(folder / "fired.jsonl", steps=20, every=0, anomalies=reports, anomaly_steps=stretches, end=end)
    result = invoke(["show", str(path), "--json", "--anomalies", "--steps", f"{start}:{start + length}"])
    here = sorted(fired & set(range(start, start + length)))
    in_view = {"steps": len(here), "first_step": here[0], "last_step": here[-1]} if here else None
    expected = [("missing-zero-grad", min(fired), len(fired), in_view)] if here else []
    groups = json.loads(result.stdout)["anomalies"]
    assert [(g["rule"], g["first_step"], g["count"], g["in_view"]) for g in groups] == expected

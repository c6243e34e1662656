"""`stepdbg.trace()` in-process: a block or a function traced as `stepdbg run` traces a script."""

from __future__ import annotations

import itertools
import os
import pickle
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from helpers import anomalies, assert_pristine, end, read_trace, steps
from torch import nn

import stepdbg
from stepdbg.session import RunOptions
from stepdbg.tracing import TracedRun, default_trace_paths


def make_problem() -> tuple[nn.Module, torch.optim.Optimizer, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    return model, torch.optim.SGD(model.parameters(), lr=0.05), torch.randn(16, 4), torch.randn(16, 1)


def train(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    steps: int = 4,
    zero_grad: bool = True,
) -> float:
    for _ in range(steps):
        if zero_grad:
            optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
    return loss.item()


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RANK", raising=False)
    yield tmp_path


def test_a_block_is_traced_as_a_script_is(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Models and optimizers built before the block (a notebook's earlier cell) are found: qualified
    names, no record of a loop without optimizer, step 0's loss; hooks only inside the block."""
    model, optimizer, x, y = make_problem()
    with stepdbg.trace("t.stepdbg.jsonl", every=2) as run:
        with pytest.raises(AssertionError, match="instrumentation left installed"):
            assert_pristine()
        train(model, optimizer, x, y, zero_grad=False)
        assert [a.rule for a in run.anomalies] == ["missing-zero-grad"]  # while it runs
        assert run.end is None
    assert run.path == Path("t.stepdbg.jsonl")
    assert run.steps == 4 and run.counts == {"missing-zero-grad": 3}
    assert [(a.rule, a.step, a.optimizer, a.param) for a in run.errors] == [("missing-zero-grad", 1, 0, "0.weight")]
    assert run.end is not None and (run.end.status, run.end.exit_code, run.end.steps) == ("ok", 0, 4)
    records = read_trace(in_tmp / "t.stepdbg.jsonl")
    assert records[0]["every"] == 2 and records[0]["command"].startswith("stepdbg.trace() in ")
    assert [s["optimizer"] for s in steps(records)] == [0, 0, 0, 0]
    assert steps(records)[0]["loss"] is not None and "0.weight" in steps(records)[0]["param_grad_norms"]
    assert [a["step"] for a in anomalies(records)] == [1]
    assert end(records)["anomalies"] == {"missing-zero-grad": 3}
    err = capsys.readouterr().err
    assert "stepdbg: error missing-zero-grad (step 1, optimizer 0)" in err
    assert "stepdbg: 4 steps in" in err and "trace written to t.stepdbg.jsonl" in err


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")
def test_a_scheduler_built_before_the_block_is_watched(in_tmp: Path) -> None:
    model, optimizer, x, y = make_problem()
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1)
    with stepdbg.trace("t.stepdbg.jsonl", quiet=True) as run:
        for _ in range(2):
            optimizer.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            scheduler.step()  # between the backward and the step that uses it
            optimizer.step()
    assert [(a.rule, a.step) for a in run.anomalies] == [("scheduler-before-step", 0)]


@pytest.mark.parametrize("raised", [ValueError("boom"), KeyboardInterrupt(), SystemExit(4)])
def test_the_blocks_exception_goes_on_unchanged(in_tmp: Path, raised: BaseException) -> None:
    model, optimizer, x, y = make_problem()
    with pytest.raises(type(raised)) as caught, stepdbg.trace("t.stepdbg.jsonl", strict=True, quiet=True) as run:
        train(model, optimizer, x, y, steps=2, zero_grad=False)
        raise raised
    assert caught.value is raised  # and strict, with an error found, does not replace it
    expected = {ValueError: ("error", 1), KeyboardInterrupt: ("interrupted", 130), SystemExit: ("ok", 4)}
    assert run.end is not None and (run.end.status, run.end.exit_code) == expected[type(raised)]
    assert end(read_trace(in_tmp / "t.stepdbg.jsonl"))["steps"] == 2


def test_strict_raises_after_a_block_that_succeeded(in_tmp: Path) -> None:
    model, optimizer, x, y = make_problem()
    failed = pytest.raises(stepdbg.StrictError, match=r"error missing-zero-grad at step 1 \(×2\)")
    with failed as caught, stepdbg.trace("t.stepdbg.jsonl", strict=True, quiet=True):
        train(model, optimizer, x, y, steps=3, zero_grad=False)
    assert caught.value.run is not None and caught.value.run.end is not None and caught.value.run.end.status == "ok"
    sent = pickle.loads(pickle.dumps(caught.value))  # a worker's error, sent to the driver
    assert type(sent) is stepdbg.StrictError and str(sent) == str(caught.value)
    with stepdbg.trace("t.stepdbg.jsonl", strict=True, quiet=True) as run:
        train(model, optimizer, x, y, steps=3)
    assert not run.anomalies


def test_nested_or_reentered_is_an_error_that_installs_nothing(in_tmp: Path) -> None:
    model, optimizer, x, y = make_problem()
    outer = stepdbg.trace("outer.stepdbg.jsonl", quiet=True)
    with outer as run:
        for inner in (stepdbg.trace("inner.stepdbg.jsonl"), outer):
            with pytest.raises(stepdbg.NestedTraceError, match="cannot be nested or re-entered"), inner:
                pass
        train(model, optimizer, x, y, steps=2)  # the outer run goes on
    assert not (in_tmp / "inner.stepdbg.jsonl").exists()
    assert run.steps == 2 and run.end is not None and run.end.status == "ok"


def test_under_stepdbg_run_a_trace_is_nested(in_tmp: Path) -> None:
    """`stepdbg run` runs the script in a `TracedRun`: a `stepdbg.trace()` in the script is nested."""
    script_run = TracedRun(
        RunOptions(target="train.py", quiet=True),
        ["train.py"],
        "stepdbg run train.py",
        [in_tmp / "train.stepdbg.jsonl"],
    )
    script_run.start()
    try:
        with pytest.raises(stepdbg.NestedTraceError), stepdbg.trace("t.stepdbg.jsonl"):
            pass
    finally:
        script_run.stop()
        script_run.finish(None)
    assert not (in_tmp / "t.stepdbg.jsonl").exists()


def test_each_call_of_a_decorated_function_is_a_run(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model, optimizer, x, y = make_problem()

    @stepdbg.trace("fit.stepdbg.jsonl")
    def fit(steps: int) -> float:
        """Docstring kept."""
        return train(model, optimizer, x, y, steps=steps)

    assert fit.__name__ == "fit" and fit.__doc__ == "Docstring kept."
    assert isinstance(fit(2), float)
    assert end(read_trace(in_tmp / "fit.stepdbg.jsonl"))["steps"] == 2
    fit(3)
    assert end(read_trace(in_tmp / "fit.stepdbg.jsonl"))["steps"] == 3
    assert capsys.readouterr().err.count("trace written to fit.stepdbg.jsonl") == 2

    @stepdbg.trace("recursive.stepdbg.jsonl", quiet=True)
    def recursive(depth: int) -> None:
        if depth:
            recursive(depth - 1)

    with pytest.raises(stepdbg.NestedTraceError):
        recursive(1)
    with pytest.raises(TypeError, match=r"@stepdbg.trace\(\), not @stepdbg.trace"):
        stepdbg.trace(fit)  # type: ignore[arg-type]


def test_disabled_rules_and_bad_options(in_tmp: Path) -> None:
    model, optimizer, x, y = make_problem()
    with stepdbg.trace("t.stepdbg.jsonl", disable="missing-zero-grad, zero-update", quiet=True) as run:
        train(model, optimizer, x, y, steps=2, zero_grad=False)
    assert not run.anomalies and not run.counts
    with pytest.raises(ValueError, match=r"unknown rule missing-zerograd for disable \(valid: missing-zero-grad, "):
        stepdbg.trace(disable=["missing-zerograd"])
    for bad in ({"every": -1}, {"patience": 0}, {"explode_ratio": float("nan")}):
        with pytest.raises(ValueError, match=f"{next(iter(bad))} must be >="):
            stepdbg.trace(**bad)  # type: ignore[arg-type]


def test_a_trace_that_cannot_be_written_is_an_oserror(in_tmp: Path) -> None:
    with pytest.raises(OSError, match="cannot write the trace"), stepdbg.trace(in_tmp / "no" / "t.jsonl"):
        pass


def test_the_default_path(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After the script where there is one, else the time, never an existing file; per rank;
    then, where a live run writes it, free names (numbered before the rank: one number a run)."""

    def default_trace_path(choices: int = 1) -> list[Path]:
        return list(itertools.islice(default_trace_paths(), choices))

    main = types.ModuleType("__main__")
    monkeypatch.setitem(sys.modules, "__main__", main)  # a notebook's: no file
    [first] = default_trace_path()
    assert first.parent == in_tmp and first.name.startswith("stepdbg-") and first.name.endswith(".stepdbg.jsonl")
    first.touch()
    [second] = default_trace_path()
    assert second != first and second.name.startswith(first.name.removesuffix(".stepdbg.jsonl"))
    main.__file__ = str(in_tmp / "train.py")  # python train.py, accelerate launch train.py
    assert default_trace_path(2) == [in_tmp / "train.stepdbg.jsonl", in_tmp / "train.1.stepdbg.jsonl"]
    monkeypatch.setenv("RANK", "1")
    assert default_trace_path(2) == [in_tmp / "train.rank1.stepdbg.jsonl", in_tmp / "train.1.rank1.stepdbg.jsonl"]
    main.__file__ = os.path.join(os.path.dirname(os.__file__), "runpy.py")  # a launcher's own main module
    assert default_trace_path()[0].name.startswith("stepdbg-")


def test_stepdbg_trace_is_the_function() -> None:
    """No module of the package shadows it (the trace file's reader and writer is `tracefile`)."""
    import stepdbg.cli  # every module, imported as the CLI imports them

    assert stepdbg.trace.__module__ == "stepdbg.tracing" and callable(stepdbg.trace)
    assert "stepdbg.trace" not in sys.modules  # no module of that name to bind over it

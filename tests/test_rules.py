"""One buggy training script per diagnostic rule: the rule fires, at the right step, naming
the right optimizer and parameter, and nothing else fires; plus --disable, --strict and
--patience.

Every buggy script exits 0 by itself and runs with --strict, so stepdbg must exit 3
(0 for an `info` rule, which fires on correct loops).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
from helpers import SCRIPTS, Spec
from typer.testing import CliRunner

from stepdbg.cli import app
from stepdbg.rules import BY_ID, IDS, INFO


@dataclass(frozen=True)
class Bug:
    """A buggy script and the one anomaly it must raise.

    ``count``: how many times the rule must be counted in the end record, where
    the script repeats the bug a known number of times (None: not checked).
    """

    spec: Spec
    rule: str
    step: int
    optimizer: int = 0
    param: str | None = None
    count: int | None = None

    @property
    def id(self) -> str:
        return self.spec.script.removesuffix(".py").removeprefix("bug_") + "".join(f"-{a}" for a in self.spec.args)


def strict(script: str, *options: str) -> Spec:
    return Spec(script, options=("--strict", *options))


BUGS = [
    Bug(strict("bug_missing_zero_grad.py"), "missing-zero-grad", 1, param="0.weight", count=29),
    Bug(
        Spec("bug_missing_zero_grad.py", ("accumulate",), options=("--strict",)),
        "missing-zero-grad",
        1,
        param="0.weight",
        count=29,
    ),
    Bug(strict("bug_partial_zero_grad.py"), "missing-zero-grad", 1, param="head.weight", count=29),
    Bug(strict("bug_gan_d_not_cleared.py"), "missing-zero-grad", 1, param="net.0.weight", count=29),
    Bug(strict("bug_lbfgs_no_zero_grad.py"), "missing-zero-grad", 1, param="0.weight", count=5),
    Bug(strict("bug_missing_zero_grad_ddp.py"), "missing-zero-grad", 1, param="module.0.weight", count=9),
    Bug(strict("bug_zero_grad_before_step.py"), "zero-grad-before-step", 0, count=30),
    Bug(Spec("bug_zero_grad_before_step.py", ("clip",), options=("--strict",)), "zero-grad-before-step", 0, count=30),
    Bug(strict("bug_grad_none_before_step.py"), "zero-grad-before-step", 0, count=30),
    Bug(strict("bug_zero_grad_in_accumulation.py"), "zero-grad-before-step", 3, count=22),
    Bug(strict("bug_step_before_backward.py"), "step-without-backward", 0, count=30),
    Bug(strict("bug_double_step.py"), "step-without-backward", 1, count=20),
    Bug(Spec("bug_double_step.py", ("zeroed",), options=("--strict",)), "step-without-backward", 1, count=20),
    Bug(strict("bug_scheduler_before_step.py"), "scheduler-before-step", 0, count=30),
    Bug(strict("bug_nonfinite_log.py"), "nonfinite", 7, param="0.weight", count=3),
    Bug(strict("bug_nonfinite_param.py"), "nonfinite", 0, param="0.weight", count=10),
    Bug(strict("ok_empty_batch.py"), "nonfinite-loss", 5, count=2),
    Bug(strict("bug_exploding.py"), "exploding-grad", 26),
    Bug(strict("bug_vanishing.py", "--every", "1"), "vanishing-grad", 2, param="layers.0.weight"),
    Bug(strict("bug_unused_param.py"), "unused-param", 19, param="aux_head.weight", count=11),
    Bug(strict("bug_optimizer_on_old_model.py"), "unused-param", 19, param="param0", count=6),
    Bug(strict("bug_not_in_optimizer.py"), "not-in-optimizer", 0, param="fc.weight"),
    Bug(strict("bug_biases_left_out.py"), "not-in-optimizer", 0, param="body.0.bias"),
    Bug(strict("bug_unfrozen_not_added.py", "--every", "10"), "not-in-optimizer", 10, param="backbone.0.weight"),
    Bug(strict("bug_optimizer_before_adapters.py"), "not-in-optimizer", 0, param="blocks.0.lora_a.weight"),
    Bug(strict("bug_zero_update.py"), "zero-update", 19, count=11),
    Bug(strict("bug_loss_tensors_kept.py"), "memory-growth", 209, count=1),
]
MISSING_ZERO_GRAD = BUGS[0]
ACCUMULATING = BUGS[1]
OLD_MODEL = next(b for b in BUGS if b.spec.script == "bug_optimizer_on_old_model.py")
UNUSED = next(b for b in BUGS if b.spec.script == "bug_unused_param.py")
DISABLED = strict("bug_missing_zero_grad.py", "--disable", "missing-zero-grad")
PATIENCE = Spec("bug_unused_param.py", options=("--patience", "5"))  # not --strict
CORRECT_STRICT = Spec("ok_module_zero_grad.py", options=("--strict",))  # shared with test_loops
QUIET_STRICT = Spec("bug_missing_zero_grad.py", options=("--quiet", "--strict"))


FIRED_ELSEWHERE = {"input-bound": "tests/test_data_phase.py"}
"""Rules whose run is checked in another file (a loader slow enough to wait for)."""


def test_every_rule_has_a_buggy_script() -> None:
    assert sorted({bug.rule for bug in BUGS} | FIRED_ELSEWHERE.keys()) == sorted(IDS)


@pytest.mark.parametrize("bug", BUGS, ids=[b.id for b in BUGS])
def test_rule_fires_alone(runs, bug: Bug) -> None:
    run = runs.get(bug.spec)
    found = [(a["rule"], a["step"], a["optimizer"], a["param"]) for a in run.anomalies]
    assert found == [(bug.rule, bug.step, bug.optimizer, bug.param)], run.describe()
    [anomaly] = run.anomalies
    severity = BY_ID[bug.rule].severity
    assert anomaly["severity"] == severity
    assert anomaly["message"] and anomaly["hint"], anomaly
    assert isinstance(anomaly["t"], float) and anomaly["t"] >= 0
    end = run.end
    assert end["status"] == "ok" and end["exit_code"] == 0, end
    assert set(end["anomalies"]) == {bug.rule}, end["anomalies"]
    if bug.count is not None:
        assert end["anomalies"][bug.rule] == bug.count, end["anomalies"]
    if severity == INFO:
        assert run.proc.returncode == 0, f"--strict ignores information{run.describe()}"
    else:
        assert run.proc.returncode == 3, f"--strict with a {severity} found must exit 3{run.describe()}"
    assert "internal error" not in run.proc.stderr


@pytest.mark.uses(MISSING_ZERO_GRAD.spec)
def test_repeated_rule_reported_once_and_counted(runs) -> None:
    """missing-zero-grad happens on each of steps 1..29: one anomaly record, counted 29 times."""
    run = runs.get(MISSING_ZERO_GRAD.spec)
    assert [a["rule"] for a in run.anomalies] == ["missing-zero-grad"]
    assert run.end["anomalies"] == {"missing-zero-grad": 29}
    assert run.end["steps"] == len(run.steps(0)) == 30
    assert "missing-zero-grad" in run.proc.stderr  # the end-of-run report names it


@pytest.mark.uses(MISSING_ZERO_GRAD.spec)
def test_where_a_repeated_rule_fired_is_in_the_trace_and_show_says_it_in_a_range(runs, tmp_path) -> None:
    """The repeats are written as stretches of steps (1 to 29, in one record or a few in a row
    on a slow machine), and `show --steps 10:20` names the rule first reported at step 1."""
    run = runs.get(MISSING_ZERO_GRAD.spec)
    stretches = [r for r in run.records if r["type"] == "anomaly_steps"]
    assert [(r["rule"], r["optimizer"]) for r in stretches] == [("missing-zero-grad", 0)] * len(stretches)
    assert [r["first_step"] for r in stretches] == [1] + [r["last_step"] + 1 for r in stretches[:-1]]
    assert stretches[-1]["last_step"] == 29 and sum(r["count"] for r in stretches) == 29
    trace = tmp_path / "run.stepdbg.jsonl"
    trace.write_text("".join(json.dumps(record) + "\n" for record in run.records))
    result = CliRunner().invoke(app, ["show", str(trace), "--steps", "10:20", "--anomalies"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "missing-zero-grad (error) first at step 1, 29 times in the run, param 0.weight; " in result.stdout
    assert "in this range at 10 steps, 10–19" in result.stdout


@pytest.mark.uses(ACCUMULATING.spec)
def test_accumulated_gradients_never_cleared_keep_their_calls_and_losses(runs) -> None:
    """Three backward passes a step, zero_grad never called: each accumulates into the
    previous one, which is no clear (a phantom zero_grad used to split every record, losing
    a backward pass and its loss)."""
    run = runs.get(ACCUMULATING.spec)
    losses = [float(line.split()[1]) for line in run.proc.stdout.splitlines() if line.startswith("loss ")]
    records = run.steps(0)
    assert [(r["calls"], r["backward_calls"]) for r in records] == [(["backward×3", "step"], 3)] * 30
    for record, start in zip(records, range(0, 90, 3)):
        assert record["loss"] == pytest.approx(sum(losses[start : start + 3]), rel=1e-6), record["step"]


@pytest.mark.uses(OLD_MODEL.spec)
def test_an_optimizer_whose_parameters_all_go_without_gradients_is_named(runs) -> None:
    """Not one parameter at a time: the whole optimizer holds a model the loop no longer uses."""
    [anomaly] = runs.get(OLD_MODEL.spec).anomalies
    assert anomaly["message"].startswith(
        "no parameter of optimizer 0 has received a gradient for 20 steps (first: param0)"
    )
    [single] = runs.get(UNUSED.spec).anomalies
    assert single["message"] == "aux_head.weight requires grad but has received no gradient for 20 steps"


@pytest.mark.uses(DISABLED)
def test_disable_silences_the_rule(runs) -> None:
    run = runs.get(DISABLED)
    assert run.anomalies == [], run.describe()
    assert run.end["anomalies"] == {}
    assert run.proc.returncode == 0, run.describe()  # --strict, and nothing left to find
    assert len(run.steps(0)) == 30


@pytest.mark.uses(MISSING_ZERO_GRAD.spec, CORRECT_STRICT, PATIENCE)
def test_strict_exit_codes(runs) -> None:
    buggy = runs.get(MISSING_ZERO_GRAD.spec)
    assert buggy.proc.returncode == 3 and buggy.end["exit_code"] == 0, buggy.describe()
    assert buggy.proc.stderr.endswith("\nstepdbg: --strict: 1 error (missing-zero-grad at step 1)\n"), buggy.describe()
    correct = runs.get(CORRECT_STRICT)
    assert correct.proc.returncode == 0, correct.describe()
    assert correct.anomalies == []
    unstrict = runs.get(PATIENCE)
    assert unstrict.anomalies, unstrict.describe()
    assert unstrict.proc.returncode == 0, "without --strict, a run with warnings exits with the script's code"


@pytest.mark.uses(QUIET_STRICT)
def test_quiet_strict_still_says_why_it_fails(runs) -> None:
    """In CI, exit 3 is a red build: its reason is the one line --quiet keeps."""
    run = runs.get(QUIET_STRICT)
    assert (run.proc.returncode, run.proc.stderr) == (3, "stepdbg: --strict: 1 error (missing-zero-grad at step 1)\n")


@pytest.mark.uses(PATIENCE)
def test_patience_moves_unused_param(runs) -> None:
    run = runs.get(PATIENCE)
    found = [(a["rule"], a["step"], a["optimizer"], a["param"]) for a in run.anomalies]
    assert found == [("unused-param", 4, 0, "aux_head.weight")], run.describe()
    assert run.end["anomalies"] == {"unused-param": 26}


@pytest.mark.parametrize("value", ["bogus", "missing-zero-grad,bogus", "nonfinite, bogus"])
def test_disable_unknown_rule_is_a_usage_error(monkeypatch, tmp_path, stepdbg_cli, value: str) -> None:
    """Through the console entry point in this process: the run must stop before it starts."""
    monkeypatch.chdir(tmp_path)
    code, out, err = stepdbg_cli("run", "--no-live", "--disable", value, str(SCRIPTS / "ok_module_zero_grad.py"))
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "bogus" in lines[0]
    for rule in IDS:
        assert rule in lines[0], f"{rule} missing from: {lines[0]}"
    assert out == ""
    assert not list(tmp_path.glob("*.stepdbg.jsonl")), "no trace for a run that never started"

"""Correct training loops, in every style we know: stepdbg must stay silent and count right.

Each script in tests/scripts/ok_*.py runs under ``stepdbg run`` (a real subprocess).
stepdbg must report no anomaly at all, count the optimizer steps and the backward
passes each consumed, and leave the script's results bit-for-bit as plain
``python`` gives them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from helpers import Spec, optimizers


def ok(script: str, *args: str, save_state: bool = False) -> Spec:
    """A correct loop runs with --strict: any warning or error would make stepdbg exit 3."""
    return Spec(script, args, options=("--strict",), save_state=save_state)


ADAMW = ok("ok_adamw_cosine.py", save_state=True)
ACCUM = ok("ok_grad_accum.py", save_state=True)
DCGAN = ok("ok_dcgan.py", save_state=True)
LBFGS = ok("ok_lbfgs.py", save_state=True)
AMP = ok("ok_amp_bf16.py", save_state=True)
CUSTOM = ok("ok_custom_subclass.py")
WARMUP = ok("ok_warmup_lambda.py")
FROZEN = ok("ok_frozen_backbone.py")
MULTITASK = ok("ok_multitask_alternating.py", save_state=True)
COMPILED = [
    ok("ok_torch_compile.py", mode, save_state=True)
    for mode in ("compiled-step", "backward-inside", "compiled-autograd")
]
IN_BACKWARD = ok("ok_optimizer_in_backward.py", save_state=True)
FLOAT64 = Spec("ok_float64.py", options=("--strict", "--every", "1"), save_state=True)
UNFREEZE = Spec("ok_progressive_unfreeze.py", options=("--strict", "--every", "10"), save_state=True)
BY_HAND = [ok("ok_gradients_by_hand.py", mode, save_state=True) for mode in ("per-sample", "copy")]
SPARSE_REWARD = ok("ok_sparse_reward.py")
SAM = [ok("ok_sam.py", mode, save_state=True) for mode in ("two-steps", "closure")]
REPTILE = [ok("ok_reptile.py", mode) for mode in ("all", "head")]
ACTOR_CRITIC = ok("ok_actor_critic.py", save_state=True)
EPOCH_SCHEDULER_CARRY = ok("ok_accumulation_epoch_scheduler.py", "carry")
GSAM = ok("ok_gsam.py", save_state=True)
PYRO = ok("ok_pyro_svi.py", save_state=True)


@dataclass(frozen=True)
class Loop:
    """A correct loop and what its trace must show.

    ``expected``: per optimizer, in the order the trace announces them (the order
    they first step), ``(class, steps, backward_calls per step)``; a class of None
    stands for a loop without optimizer. ``calls``: the ``calls`` of every step
    record after the first, where the loop makes them unambiguous.
    """

    spec: Spec
    expected: tuple[tuple[str | None, int, int], ...]
    calls: tuple[str, ...] | None = None

    def __str__(self) -> str:
        return str(self.spec)


LOOPS = [
    Loop(ADAMW, (("AdamW", 40, 1),), ("scheduler", "zero_grad", "backward", "step")),
    Loop(ACCUM, (("SGD", 12, 4),), ("zero_grad", "backward×4", "step")),
    Loop(DCGAN, (("Adam", 40, 2), ("Adam", 40, 1))),
    Loop(LBFGS, (("LBFGS", 15, 1),)),
    Loop(ok("ok_manual_sgd.py", "none"), ((None, 30, 1),), ("backward",)),
    Loop(ok("ok_manual_sgd.py", "zero"), ((None, 30, 1),), ("backward",)),
    Loop(ok("ok_from_scratch.py", "inplace", save_state=True), ((None, 25, 1),), ("backward",)),
    Loop(ok("ok_from_scratch.py", "rebind", save_state=True), ((None, 25, 1),), ("backward",)),
    Loop(ok("ok_zero_grad_keep.py"), (("SGD", 30, 1),), ("zero_grad", "backward", "step")),
    Loop(FROZEN, (("AdamW", 30, 1),), ("scheduler", "zero_grad", "backward", "step")),
    Loop(AMP, (("Adam", 30, 1),), ("zero_grad", "backward", "step")),
    Loop(
        ok("ok_amp_skipped_first_step_scheduler.py"), (("SGD", 20, 1),), ("scheduler", "zero_grad", "backward", "step")
    ),
    Loop(ok("ok_checkpoint_reentrant.py"), (("Adam", 30, 1),), ("zero_grad", "backward", "step")),
    Loop(ok("ok_grad_penalty.py"), (("Adam", 30, 1),), ("zero_grad", "autograd.grad", "backward", "step")),
    Loop(ok("ok_sparse_embedding.py"), (("SparseAdam", 30, 1), ("Adam", 30, 1))),
    Loop(ok("ok_tied_retain_graph.py"), (("Adam", 30, 2),), ("zero_grad", "backward×2", "step")),
    Loop(Spec("ok_bias_before_batchnorm.py", options=("--strict", "--every", "1")), (("SGD", 30, 1),)),
    Loop(Spec("ok_bias_before_batchnorm.py", ("copy",), options=("--strict", "--every", "1")), (("SGD", 30, 1),)),
    Loop(Spec("ok_zero_init_branches.py", options=("--strict", "--every", "1")), (("AdamW", 40, 1),)),
    Loop(IN_BACKWARD, (("Adam", 20, 1),) * 4),
    Loop(FLOAT64, (("Adam", 20, 1),), ("zero_grad", "backward", "step")),
    *[Loop(compiled, (("AdamW", 12, 1),), ("zero_grad", "backward", "step")) for compiled in COMPILED],
    Loop(UNFREEZE, (("AdamW", 30, 1),), ("zero_grad", "backward", "step")),
    Loop(WARMUP, (("AdamW", 30, 1),), ("scheduler", "zero_grad", "backward", "step")),
    Loop(CUSTOM, (("MySGD", 30, 1),), ("zero_grad", "backward", "step")),
    Loop(ok("ok_autograd_backward.py"), (("Adam", 30, 1),), ("zero_grad", "backward", "step")),
    Loop(ok("ok_module_zero_grad.py"), (("SGD", 30, 1),), ("zero_grad", "backward", "step")),
    Loop(ok("ok_grad_none_manual.py"), (("Adam", 30, 1),), ("zero_grad", "backward", "step")),
    Loop(ok("ok_grad_none_manual.py", "zeros"), (("Adam", 30, 1),), ("zero_grad", "backward", "step")),
    Loop(ok("ok_lightning.py"), (("Adam", 12, 1), ("Adam", 6, 2))),
    Loop(ok("ok_accelerate.py"), (("AdamW", 8, 4),)),
    Loop(ok("ok_skorch.py"), (("SGD", 12, 1),)),
    Loop(ok("ok_ignite.py"), (("SGD", 12, 1),), ("zero_grad", "backward", "step")),
    Loop(SPARSE_REWARD, (("Adam", 60, 1),), ("zero_grad", "backward", "step")),
    Loop(ok("ok_task_heads.py"), (("Adam", 120, 1),), ("zero_grad", "backward", "step")),
    Loop(ok("ok_resume_checkpoint.py", "10"), (("AdamW", 10, 1), ("AdamW", 10, 1))),
    Loop(ok("ok_resume_checkpoint.py", "1"), (("AdamW", 1, 1), ("AdamW", 10, 1))),
    Loop(SAM[0], (("SGD", 20, 1),), ("zero_grad", "scheduler", "backward", "zero_grad", "backward", "step")),
    Loop(SAM[1], (("SAM", 20, 1),), ("zero_grad", "scheduler", "backward", "step", "zero_grad", "backward")),
    Loop(ok("ok_zero_redundancy.py"), (("ZeroRedundancyOptimizer", 20, 1),), ("zero_grad", "backward", "step")),
    Loop(ACTOR_CRITIC, (("Adam", 20, 1), ("Adam", 20, 1))),
    Loop(ok("ok_grad_set_then_backward.py"), (("SGD", 20, 1),), ("autograd.grad", "zero_grad", "backward", "step")),
    Loop(ok("ok_step_raises_caught.py"), (("Flaky", 19, 1), ("SGD", 20, 1))),
    Loop(ok("ok_backward_inside_step.py"), (("HutchinsonSGD", 10, 1),)),
    Loop(ok("ok_gradient_surgery.py"), (("SGD", 30, 1),)),
    Loop(ok("ok_accumulation_epoch_scheduler.py", "clear"), (("SGD", 8, 4),)),
    Loop(ok("ok_adversarial_training.py"), (("SGD", 30, 1),), ("backward×3", "zero_grad", "backward", "step")),
    # long enough for memory-growth to judge it, and flat: the floats kept are no leak
    Loop(ok("bug_loss_tensors_kept.py", "item"), (("SGD", 230, 1),), ("zero_grad", "backward", "step")),
    Loop(ok("ok_grad_data_zero.py"), (("SGD", 10, 1),), ("zero_grad", "backward", "step")),
    Loop(GSAM, (("GSAM", 8, 1),), ("scheduler", "step", "zero_grad", "backward", "zero_grad", "backward")),
    Loop(PYRO, (("Adam", 6, 1),) * 6),
]
LOOP_IDS = [loop.spec.script.removesuffix(".py") + "".join(f"-{a}" for a in loop.spec.args) for loop in LOOPS]
FAITHFUL = [ADAMW, DCGAN, LBFGS, AMP, ACCUM, MULTITASK, UNFREEZE, *COMPILED, IN_BACKWARD, BY_HAND[0], SAM[0]]


@pytest.fixture(params=LOOPS, ids=LOOP_IDS)
def loop(request: pytest.FixtureRequest) -> Loop:
    return request.param


# ---- silence ------------------------------------------------------------------------------


def test_correct_loop_is_silent(runs, loop: Loop) -> None:
    run = runs.get(loop.spec)
    assert run.anomalies == [], run.describe()
    assert run.proc.returncode == 0, run.describe()
    assert "internal error" not in run.proc.stderr, run.describe()
    end = run.end
    assert end["status"] == "ok" and end["exit_code"] == 0, end
    assert end["anomalies"] == {}, run.describe()
    assert end["steps"] == len(run.steps())
    assert run.records[0]["type"] == "header"


def test_correct_loop_step_counts(runs, loop: Loop) -> None:
    run = runs.get(loop.spec)
    announced = optimizers(run.records)
    if loop.expected[0][0] is None:
        assert announced == [], "a loop without an optimizer announces none"
        [(_, count, backward_calls)] = loop.expected
        records = run.steps(None)
        assert len(records) == len(run.steps()) == count, run.describe()
        assert [r["step"] for r in records] == list(range(count))
        assert all(r["backward_calls"] == backward_calls for r in records)
        return
    assert [o["class"] for o in announced] == [cls for cls, _, _ in loop.expected], announced
    for info, (cls, count, backward_calls) in zip(announced, loop.expected):
        records = run.steps(info["optimizer"])
        assert len(records) == count, f"{cls} (optimizer {info['optimizer']}): {len(records)} steps, expected {count}"
        assert [r["step"] for r in records] == list(range(count))
        assert [r["backward_calls"] for r in records] == [backward_calls] * count, f"{cls}: backward_calls"
    assert len(run.steps()) == sum(count for _, count, _ in loop.expected)


def test_correct_loop_records(runs, loop: Loop) -> None:
    """Losses and norms are finite numbers, calls are as the loop makes them, records come in order."""
    run = runs.get(loop.spec)
    seen_optimizers: set[int] = set()
    norms = []
    for record in run.records:
        if record["type"] == "optimizer":
            seen_optimizers.add(record["optimizer"])
        if record["type"] != "step":
            continue
        assert record["optimizer"] is None or record["optimizer"] in seen_optimizers, "step before its optimizer record"
        assert "nonfinite" not in record, record
        assert record["loss"] is not None and math.isfinite(record["loss"]), record
        if not record["skipped"] and record["optimizer"] is not None:
            assert (
                record["grad_norm"] is not None and math.isfinite(record["grad_norm"]) and record["grad_norm"] >= 0
            ), record
            norms.append(record["grad_norm"])
    assert not norms or max(norms) > 0
    if loop.calls is not None:
        later = [tuple(r["calls"]) for r in run.steps()[1:]]
        assert set(later) == {loop.calls}, f"calls after the first step: {sorted(set(later))}"


# ---- particular loops ----------------------------------------------------------------------


@pytest.mark.uses(ADAMW)
def test_grad_norm_is_exact(runs) -> None:
    """The trace's grad_norm is the global norm the script measures itself in float64."""
    run = runs.get(ADAMW)
    expected = run.state()["grad_norms"]
    got = [r["grad_norm"] for r in run.steps(0)]
    assert len(got) == len(expected) == 40
    for step, (a, b) in enumerate(zip(got, expected)):
        assert a == pytest.approx(b, rel=1e-4), f"step {step}: trace {a}, script {b}"


@pytest.mark.uses(SPARSE_REWARD)
def test_gradients_are_zero_exactly_where_the_loss_is(runs) -> None:
    """Sparse rewards: zero gradients at most steps, ordinary ones at the rewarded episodes."""
    run = runs.get(SPARSE_REWARD)
    rewarded = [r["step"] for r in run.steps(0) if r["grad_norm"] > 0]
    assert rewarded == [24, 49]
    assert all(r["loss"] == 0 for r in run.steps(0) if r["step"] not in rewarded)


@pytest.mark.uses(FLOAT64)
def test_float64_gradients_are_measured_in_float64(runs) -> None:
    run = runs.get(FLOAT64)
    got = [r["grad_norm"] for r in run.steps(0)]
    assert got == pytest.approx(run.state()["grad_norms"], rel=1e-12)
    assert all(r["update_ratio"] > 0 for r in run.steps(0))


FROM_SCRATCH = [ok("ok_from_scratch.py", mode, save_state=True) for mode in ("inplace", "rebind")]


@pytest.mark.parametrize("spec", FROM_SCRATCH, ids=["inplace", "rebind"])
def test_loop_without_optimizer_records_the_gradients_norm(runs, spec: Spec) -> None:
    """No optimizer, no module: the leaves are found from the graph, also when each iteration makes new ones."""
    run = runs.get(spec)
    records = run.steps(None)
    assert [r["grad_norm"] for r in records] == pytest.approx(run.state()["grad_norms"], rel=1e-5)
    assert all(r["group_grad_norms"] == [] and r["lr"] == [] for r in records)


@pytest.mark.parametrize("spec", BY_HAND, ids=["per-sample", "copy"])
def test_gradients_set_by_hand_are_fresh_gradients(runs, spec: Spec) -> None:
    """No backward fills ``.grad``, but each step finds gradients the previous one did not
    consume: silent, and each step's norm is the one the script assigned."""
    run = runs.get(spec)
    assert run.anomalies == [] and run.proc.returncode == 0, run.describe()
    records = run.steps(0)
    assert [r["backward_calls"] for r in records] == [0] * 20
    assert [r["grad_norm"] for r in records] == pytest.approx(run.state()["grad_norms"], rel=1e-5)


@pytest.mark.uses(ACTOR_CRITIC)
def test_each_optimizer_takes_the_backward_passes_that_reached_it(runs) -> None:
    """Two models, both losses backpropagated before both steps: each step's loss is its own."""
    run = runs.get(ACTOR_CRITIC)
    expected = run.state()
    for index, model in enumerate(("actor", "critic")):
        assert [r["loss"] for r in run.steps(index)] == pytest.approx(expected[model], rel=1e-6), model


@pytest.mark.parametrize("spec", REPTILE, ids=["all", "head"])
def test_reptile_meta_gradients_set_by_hand_after_the_clear(runs, spec: Spec) -> None:
    """The meta step finds gradients written by hand after its zero_grad (for every parameter,
    or the head's alone), with the inner loops' backward passes in between: fresh gradients,
    not cleared ones. Each fresh inner optimizer's steps consume one backward each, from its first."""
    run = runs.get(spec)
    assert run.anomalies == [] and run.proc.returncode == 0, run.describe()
    announced = optimizers(run.records)
    assert [o["class"] for o in announced].count("SGD") == 10
    meta = next(o["optimizer"] for o in announced if o["class"] == "Adam")
    assert [(r["backward_calls"], r["loss"]) for r in run.steps(meta)] == [(0, None)] * 10
    inner = [r for o in announced if o["class"] == "SGD" for r in run.steps(o["optimizer"])]
    assert len(inner) == 30 and {r["backward_calls"] for r in inner} == {1}


LEARNED_LR = Spec("ok_learned_lr.py", options=("--quiet",))
LEARNED_LR_BARE = Spec("ok_learned_lr.py", python=True)


@pytest.mark.uses(LEARNED_LR, LEARNED_LR_BARE)
def test_learned_lr_through_a_differentiable_optimizer_adds_no_warning(runs) -> None:
    """Non-leaf fast weights and a tensor lr that requires grad: stepdbg's reads of them raise
    no warning (the script makes warnings errors), and the lr is recorded."""
    bare, run = runs.get(LEARNED_LR_BARE).proc, runs.get(LEARNED_LR)
    proc = run.proc
    assert (
        (proc.returncode, proc.stdout, proc.stderr)
        == (bare.returncode, bare.stdout, bare.stderr)
        == (0, bare.stdout, "")
    )
    assert run.anomalies == [], "a frozen leaf beside unread fast weights says nothing about the order"
    assert [r["lr"][0] for r in run.steps()][::2] == pytest.approx([0.1353, 0.2265, 0.3130], rel=1e-3)


@pytest.mark.uses(GSAM)
def test_backward_passes_inside_a_step_without_closure_are_its_own(runs) -> None:
    """GSAM's ``step()`` backpropagates twice itself: each record has its own last loss and
    the norm of the gradients the base optimizer stepped on, none the previous iteration's."""
    run = runs.get(GSAM)
    state = run.state()
    assert [r["loss"] for r in run.steps(1)] == pytest.approx(state["losses"], rel=1e-6)
    assert [r["grad_norm"] for r in run.steps(1)] == pytest.approx(state["grad_norms"], rel=1e-5)


@pytest.mark.uses(PYRO)
def test_optimizers_built_after_a_backward_own_it(runs) -> None:
    """Pyro builds an optimizer per parameter after the first backward: each one's step 0
    has that backward and its loss, like every later step of every optimizer."""
    run = runs.get(PYRO)
    expected = run.state()["losses"]
    for info in optimizers(run.records):
        assert [r["loss"] for r in run.steps(info["optimizer"])] == pytest.approx(expected, rel=1e-6)
    assert run.steps()[0]["calls"] == ["backward", "step"]


@pytest.mark.uses(IN_BACKWARD)
def test_steps_inside_a_backward_consume_that_backward(runs) -> None:
    """Each per-parameter optimizer's step 0 runs during the first backward: one backward, its loss."""
    run = runs.get(IN_BACKWARD)
    first_loss = run.steps()[0]["loss"]
    for info in optimizers(run.records):
        step0 = run.steps(info["optimizer"])[0]
        assert step0["backward_calls"] == 1 and step0["loss"] == first_loss, step0
    assert run.steps()[0]["calls"] == ["backward", "step"]


@pytest.mark.uses(AMP)
def test_amp_skipped_steps(runs) -> None:
    """GradScaler's skipped steps are recorded as skipped; the others carry the unscaled norm."""
    run = runs.get(AMP)
    expected = run.state()["grad_norms"]
    records = run.steps(0)
    assert len(records) == len(expected) == 30
    assert [r["step"] for r in records if r["skipped"]] == [5, 17]
    for record, norm in zip(records, expected):
        assert math.isfinite(record["loss"]), record
        if record["skipped"]:
            assert norm is None
            assert record["grad_norm"] is None and record["group_grad_norms"] == [None], record
        else:
            assert record["grad_norm"] == pytest.approx(norm, rel=1e-4), f"step {record['step']}"
    # the loss is unscaled: about the size of the script's own mse, not 4096 times it
    assert records[0]["loss"] < 100


@pytest.mark.uses(WARMUP)
def test_warmup_starts_at_lr_zero(runs) -> None:
    records = runs.get(WARMUP).steps(0)
    assert records[0]["lr"] == [0.0]
    assert records[1]["lr"] == [pytest.approx(1e-3)]
    assert records[12]["lr"] == [pytest.approx(1e-2)]


@pytest.mark.uses(FROZEN)
def test_frozen_group_has_no_gradient(runs) -> None:
    run = runs.get(FROZEN)
    [info] = optimizers(run.records)
    assert [g["params"] for g in info["groups"]] == [
        ["backbone.0.weight", "backbone.0.bias", "backbone.2.weight", "backbone.2.bias"],
        ["head.weight", "head.bias"],
    ]
    for record in run.steps(0):
        assert record["group_grad_norms"][0] is None
        assert record["group_grad_norms"][1] > 0
        assert record["lr"][0] == pytest.approx(record["lr"][1] / 100)


@pytest.mark.uses(MULTITASK)
def test_alternating_tasks_step_every_optimizer_silently(runs) -> None:
    """Each head's optimizer steps every iteration, with gradients every other one: no alarm.

    (Not in LOOPS: half of the heads' steps find no gradient, so their grad_norm is null.)
    """
    run = runs.get(MULTITASK)
    assert run.proc.returncode == 0 and run.anomalies == [], run.describe()
    assert [len(run.steps(index)) for index in range(3)] == [30, 30, 30]
    assert all(r["grad_norm"] > 0 for r in run.steps(0)), "the trunk trains every iteration"
    for head in (0, 1):
        norms = [r["grad_norm"] for r in run.steps(1 + head)]
        assert all((n is not None and n > 0) == (i % 2 == head) for i, n in enumerate(norms)), norms


@pytest.mark.uses(UNFREEZE)
def test_param_groups_added_while_training_are_announced(runs) -> None:
    """add_param_group mid-run: a new optimizer record names the new groups before the step that uses them."""
    run = runs.get(UNFREEZE)
    announced = [(i, r) for i, r in enumerate(run.records) if r["type"] == "optimizer"]
    assert [[g["params"] for g in r["groups"]] for _, r in announced] == [
        [["4.weight", "4.bias"]],
        [["4.weight", "4.bias"], ["2.weight", "2.bias"]],
        [["4.weight", "4.bias"], ["2.weight", "2.bias"], ["0.weight", "0.bias"]],
    ]
    steps = {r["step"]: i for i, r in enumerate(run.records) if r["type"] == "step"}
    assert [i for i, _ in announced] == [steps[0] - 1, steps[10] - 1, steps[20] - 1]
    for step, names in (
        (10, ["4.weight", "4.bias", "2.weight", "2.bias"]),
        (20, ["4.weight", "4.bias", "2.weight", "2.bias", "0.weight", "0.bias"]),
    ):
        record = run.records[steps[step]]
        assert list(record["param_grad_norms"]) == names and list(record["param_update_ratios"]) == names
        assert len(record["group_grad_norms"]) == len(record["lr"]) == len(names) // 2


@pytest.mark.uses(*COMPILED)
@pytest.mark.parametrize("compiled", COMPILED, ids=lambda spec: spec.args[0])
def test_compiled_steps_and_backward_passes_are_traced_without_dynamo_tracing_stepdbg(runs, compiled: Spec) -> None:
    """Every step is recorded with its exact norm and loss, also where the step or the
    backward runs in compiled code; Dynamo never traced stepdbg's code (it would warn
    about it on stderr, or the hooks would run at trace time only), and AOTAutograd's
    trace-time autograd.grad is not taken for the loop's."""
    run = runs.get(compiled)
    assert "stepdbg/" not in run.proc.stderr and "recompile" not in run.proc.stderr, run.proc.stderr[-3000:]
    state = run.state()
    assert [r["grad_norm"] for r in run.steps(0)] == pytest.approx(state["grad_norms"], rel=1e-4)
    assert [r["loss"] for r in run.steps(0)] == pytest.approx(state["losses"], rel=1e-6)
    assert all(r["calls"] == ["zero_grad", "backward", "step"] and r["backward_calls"] == 1 for r in run.steps(0))


@pytest.mark.uses(CUSTOM)
def test_optimizer_index_is_creation_order(runs) -> None:
    """docs/trace-format.md: an optimizer's index is its place in creation order.

    The script builds a plain SGD first and never steps it; MySGD, built second, is
    the only optimizer to step: it is optimizer 1, and the unused SGD writes no record.
    """
    run = runs.get(CUSTOM)
    assert [(o["optimizer"], o["class"]) for o in optimizers(run.records)] == [(1, "MySGD")]
    assert {r["optimizer"] for r in run.steps()} == {1}


# ---- faithfulness: stepdbg changes nothing the script computes --------------------------------


def _assert_same(a: Any, b: Any, where: str) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), f"{where}: tensors differ"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{where}: keys differ"
        for key in a:
            _assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), f"{where}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), where
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


FAITHFUL_PAIRS = [(spec, Spec(spec.script, spec.args, python=True, save_state=True)) for spec in FAITHFUL]


@pytest.mark.parametrize("pair", FAITHFUL_PAIRS, ids=[s.script.removesuffix(".py") for s in FAITHFUL])
def test_faithful_to_plain_python(runs, pair: tuple[Spec, Spec]) -> None:
    """Final weights, optimizer state and RNG state bit for bit, and stdout byte for byte."""
    spec, plain_spec = pair
    plain = runs.get(plain_spec)
    traced = runs.get(spec)
    assert plain.proc.returncode == 0, plain.proc.stderr[-2000:]
    assert traced.proc.returncode == 0, traced.describe()
    assert traced.proc.stdout == plain.proc.stdout
    _assert_same(plain.state(), traced.state(), "state")


@pytest.mark.uses(EPOCH_SCHEDULER_CARRY)
def test_a_per_epoch_scheduler_over_an_unfinished_accumulation_is_no_misplaced_scheduler(runs) -> None:
    """The scheduler steps while 2 batches' gradients wait; they carry on into the next
    epoch's first step, which then sums 6 backward passes."""
    run = runs.get(EPOCH_SCHEDULER_CARRY)
    assert run.anomalies == [] and run.proc.returncode == 0, run.describe()
    assert [r["backward_calls"] for r in run.steps(0)] == [4, 4, 6, 4, 6, 4, 6, 4]
    assert [r["calls"] for r in run.steps(0)][2] == ["zero_grad", "backward×2", "scheduler", "backward×4", "step"]

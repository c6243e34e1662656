"""Large gradients' norms taken on a helper thread while the step runs: the same numbers as
in place, the same training, and only for steps that leave their gradients alone."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import read_trace, steps
from torch.optim.optimizer import register_optimizer_step_pre_hook

import stepdbg
from stepdbg.collector import beside
from stepdbg.collector.beside import NormsBeside, PendingNorms


def train(
    make_optimizer, folder: Path, name: str, traced: bool = True, width: int = 512
) -> tuple[list[float | None], list[torch.Tensor]]:
    """Three steps of a ``width``-square layer (512: above `BESIDE_MIN_NUMEL`): the norms the
    trace recorded and the parameters after."""
    torch.manual_seed(0)
    model = torch.nn.Linear(width, width)
    optimizer = make_optimizer(model.parameters())
    x = torch.randn(8, width)
    trace = folder / f"{name}.stepdbg.jsonl"

    def loop() -> None:
        for _ in range(3):
            optimizer.zero_grad()
            model(x).pow(2).mean().backward()
            optimizer.step()

    if traced:
        with stepdbg.trace(trace, live=False, quiet=True, every=0):
            loop()
        norms = [step["grad_norm"] for step in steps(read_trace(trace))]
    else:
        loop()
        norms = []
    return norms, [p.detach().clone() for p in model.parameters()]


OPTIMIZERS = {
    "adamw": lambda params: torch.optim.AdamW(params, lr=1e-3, weight_decay=0.1),
    "adam-maximize": lambda params: torch.optim.Adam(params, lr=1e-3, weight_decay=0.1, maximize=True),
    "sgd-momentum": lambda params: torch.optim.SGD(params, lr=1e-3, momentum=0.9, weight_decay=0.1),
}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_norms_taken_beside_the_step_are_those_taken_in_place(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    submitted: list[object] = []
    submit = NormsBeside.submit
    monkeypatch.setattr(NormsBeside, "submit", lambda self, *a: submitted.append(a) or submit(self, *a))
    besides, trained = train(OPTIMIZERS[name], tmp_path, "beside")
    assert len(submitted) == 3
    _, bare = train(OPTIMIZERS[name], tmp_path, "bare", traced=False)
    monkeypatch.setattr(beside, "BESIDE_MIN_NUMEL", 1 << 62)
    in_place, _ = train(OPTIMIZERS[name], tmp_path, "in-place")
    assert len(submitted) == 3
    assert besides == in_place  # the very same floats
    assert all(isinstance(norm, float) and norm > 0 for norm in besides)
    assert all(torch.equal(a, b) for a, b in zip(trained, bare))  # training untouched


@pytest.mark.parametrize(
    "make_optimizer",
    [
        lambda params: torch.optim.SGD(params, lr=1e-3, momentum=0.9, nesterov=True),  # adds into its gradients
        lambda params: torch.optim.Rprop(params, lr=1e-3),  # writes its gradients
        lambda params: torch.optim.AdamW(params, lr=1e-3, fused=True),  # its kernel takes them as mutable
    ],
    ids=["sgd-nesterov", "rprop", "adamw-fused"],
)
def test_steps_that_may_write_their_gradients_take_their_norms_in_place(
    make_optimizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(NormsBeside, "submit", lambda *a: pytest.fail("taken beside a step that writes gradients"))
    norms, _ = train(make_optimizer, tmp_path, "in-place")
    assert all(isinstance(norm, float) and norm > 0 for norm in norms)


def test_small_gradients_take_their_norms_in_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Handing a small norm to the thread costs more than taking it."""
    monkeypatch.setattr(NormsBeside, "submit", lambda *a: pytest.fail("a small norm taken beside"))
    norms, _ = train(OPTIMIZERS["adamw"], tmp_path, "small", width=64)
    assert all(isinstance(norm, float) and norm > 0 for norm in norms)


@pytest.mark.parametrize("hook", ["pre", "post", "global pre"])
def test_a_step_hook_that_could_run_beside_the_norm_keeps_it_in_place(
    hook: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The optimizer's own hooks (its pre-hooks run after stepdbg's, its post-hooks before),
    and a global pre-hook registered after stepdbg's, may clip or clear the gradients in place."""
    monkeypatch.setattr(NormsBeside, "submit", lambda *a: pytest.fail("taken beside a step with a hook"))
    handles = []

    def hooked(params):
        optimizer = torch.optim.AdamW(params, lr=1e-3)
        if hook == "pre":
            optimizer.register_step_pre_hook(lambda opt, args, kwargs: None)
        elif hook == "post":
            optimizer.register_step_post_hook(lambda opt, args, kwargs: None)
        else:
            handles.append(register_optimizer_step_pre_hook(lambda opt, args, kwargs: None))
        return optimizer

    try:
        norms, _ = train(hooked, tmp_path, "hooked")
    finally:
        for handle in handles:
            handle.remove()
    assert len(norms) == 3 and all(isinstance(norm, float) for norm in norms)


def test_gradients_written_while_the_norm_was_taken_give_no_norm() -> None:
    """A version moved by the step: what was read may be half old, half new."""
    grads = [torch.ones(4), torch.ones(3)]
    pending = PendingNorms(grads)
    grads[0].add_(1.0)
    pending._run(lambda: ([torch.tensor(1.0)], [1]))
    assert pending.result() is None


def test_an_error_on_the_helper_thread_is_raised_where_the_step_ends() -> None:
    pending = PendingNorms([torch.ones(2)])
    pending._run(lambda: 1 / 0)  # type: ignore[arg-type,return-value]
    with pytest.raises(ZeroDivisionError):
        pending.result()

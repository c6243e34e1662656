"""Small, exact traces for the show and diff tests, written with the real writer.

Every value is a plain function of (optimizer, step), so two traces agree unless a
test's ``tweak`` changes a record; ``slow`` scales every time so that timings
differ without the values differing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from stepdbg.schema import Anomaly, AnomalySteps, EndRecord, Header, OptimizerInfo, ParamGroupInfo, StepRecord
from stepdbg.tracefile import TraceWriter

PARAMS = ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")
HEAD_PARAMS = ("head.weight", "head.bias")
CALLS = ["zero_grad", "backward", "step"]


def param_names(optimizer: int, params: Sequence[str]) -> list[str]:
    return list(params) if optimizer == 0 else list(HEAD_PARAMS)


def make_step(
    optimizer: int, step: int, every: int, params: Sequence[str], slow: float = 1.0, spans: bool = False
) -> StepRecord:
    times = {"forward": 0.010 * slow, "backward": 0.020 * slow, "step": 0.005 * slow, "zero_grad": 0.001 * slow}
    times["total"] = sum(times.values())
    record = StepRecord(
        optimizer=optimizer,
        step=step,
        t=0.05 * (step + 1) * slow,
        calls=list(CALLS),
        backward_calls=1,
        skipped=False,
        loss=2.0 / (1 + step) + optimizer,
        grad_norm=1.0 + 0.1 * step,
        group_grad_norms=[1.0 + 0.1 * step],
        lr=[0.1],
        time=times,
    )
    if spans:  # zero_grad, 10 ms of forward, backward, step: the calls end to end with the gaps
        record.spans = [
            "zero_grad",
            0.0,
            times["zero_grad"],
            "backward",
            0.011 * slow,
            times["backward"],
            "step",
            0.031 * slow,
            times["step"],
        ]
    if every and step % every == 0:
        names = param_names(optimizer, params)
        record.param_grad_norms = {name: 0.1 * (i + 1) + 0.01 * step for i, name in enumerate(names)}
        record.update_ratio = 0.001
        record.param_update_ratios = dict.fromkeys(names, 0.001)
    return record


def write_trace(
    path: Path,
    steps: int = 10,
    optimizers: int = 1,
    every: int = 5,
    params: Sequence[str] = PARAMS,
    tweak: Callable[[StepRecord], None] | None = None,
    anomalies: Sequence[Anomaly] = (),
    anomaly_steps: Sequence[AnomalySteps] = (),
    end: EndRecord | bool | None = True,
    slow: float = 1.0,
    command: str = "stepdbg run train.py",
    spans: bool = False,
    rank: int | None = None,
    start: str = "2025-01-01T00:00:00+00:00",
    ddp: bool = False,
) -> Path:
    """A trace of ``steps`` iterations, each stepping every optimizer once, in order (of rank
    ``rank`` of a distributed run, where one is given); the ``anomaly_steps`` records come
    after the last step, as a run writes those still going."""
    writer = TraceWriter(path)
    writer.write(
        Header(
            stepdbg="0.1.0",
            torch="2.13.0",
            python="3.12.0",
            argv=["train.py"],
            command=command,
            cwd="/work",
            start=start,
            device="cpu",
            every=every,
            pid=1,
            rank=rank,
        ).to_json()
    )
    for step in range(steps):
        for optimizer in range(optimizers):
            if step == 0:
                groups = [ParamGroupInfo(params=param_names(optimizer, params), numel=100)]
                writer.write(OptimizerInfo(optimizer=optimizer, cls="SGD", groups=groups, ddp=ddp).to_json())
            record = make_step(optimizer, step, every, params, slow, spans)
            if tweak is not None:
                tweak(record)
            writer.write(record.to_json())
            for anomaly in anomalies:
                if (anomaly.optimizer, anomaly.step) == (optimizer, step):
                    writer.write(anomaly.to_json())
    for stretch in anomaly_steps:
        writer.write(stretch.to_json())
    if end is True:
        end = EndRecord(status="ok", exit_code=0, duration=0.05 * steps * slow + 0.5, steps=steps * optimizers)
    if end:
        writer.write(end.to_json())
    writer.close()
    return path


def cut_last_line(path: Path) -> Path:
    """Make the trace look like a killed run's: its last line cut mid-way, no newline."""
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])
    return path


def replace_line(path: Path, number: int, text: str) -> Path:
    """Replace line ``number`` (1-based) with ``text``."""
    lines = path.read_text().splitlines(keepends=True)
    lines[number - 1] = text + "\n"
    path.write_text("".join(lines))
    return path

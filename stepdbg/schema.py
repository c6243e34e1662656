"""The trace records: the one contract between `stepdbg run` and `show`/`diff`.

Every line of a trace is one of these records as a JSON object, told apart by
its ``type``. docs/trace-format.md documents each field. Readers use
``.get(key, default)`` for every field added after schema 1 and ignore unknown
keys, so older traces keep loading.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

SCHEMA_VERSION = 1

PHASES = ("forward", "backward", "step", "zero_grad")
"""The timed phases of an iteration; ``time`` also has ``total``."""

# The names that appear in a step's ``calls``.
CALL_ZERO_GRAD = "zero_grad"
CALL_BACKWARD = "backward"
CALL_GRAD = "autograd.grad"
CALL_STEP = "step"
CALL_SCHEDULER = "scheduler"
CALL_REPEAT = "×"
"""Consecutive repeats of a call are written once as ``"backward×4"``."""
CALL_ELIDED = "…"
"""First in ``calls`` when earlier calls since the previous record were left out."""

SEVERITIES = ("info", "warning", "error")


@dataclass
class Header:
    """First line: what ran, where, with which versions."""

    stepdbg: str
    torch: str
    python: str
    argv: list[str]
    command: str
    cwd: str
    start: str
    device: str
    every: int
    pid: int
    rank: int | None = None
    schema: int = SCHEMA_VERSION
    type: str = "header"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Header:
        return cls(
            stepdbg=data.get("stepdbg", "?"),
            torch=data.get("torch", "?"),
            python=data.get("python", "?"),
            argv=list(data.get("argv", [])),
            command=data.get("command", ""),
            cwd=data.get("cwd", ""),
            start=data.get("start", ""),
            device=data.get("device", "cpu"),
            every=int(data.get("every", 0)),
            pid=int(data.get("pid", 0)),
            rank=data.get("rank"),
            schema=int(data.get("schema", SCHEMA_VERSION)),
        )


@dataclass
class ParamGroupInfo:
    params: list[str]
    numel: int

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ParamGroupInfo:
        return cls(params=list(data.get("params", [])), numel=int(data.get("numel", 0)))


@dataclass
class OptimizerInfo:
    """Written once, before an optimizer's first step: its class and parameter names."""

    optimizer: int
    cls: str
    groups: list[ParamGroupInfo]
    type: str = "optimizer"

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "optimizer": self.optimizer,
            "class": self.cls,
            "groups": [asdict(g) for g in self.groups],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OptimizerInfo:
        return cls(
            optimizer=int(data["optimizer"]),
            cls=data.get("class", "?"),
            groups=[ParamGroupInfo.from_json(g) for g in data.get("groups", [])],
        )

    @property
    def param_names(self) -> list[str]:
        return [name for group in self.groups for name in group.params]


@dataclass
class StepRecord:
    """One optimizer step, or one iteration of a loop with no optimizer."""

    optimizer: int | None
    step: int
    t: float
    calls: list[str]
    backward_calls: int
    skipped: bool
    loss: float | None
    grad_norm: float | None
    group_grad_norms: list[float | None]
    lr: list[float | None]
    time: dict[str, float]
    param_grad_norms: dict[str, float | None] | None = None
    update_ratio: float | None = None
    param_update_ratios: dict[str, float | None] | None = None
    nonfinite: dict[str, str] | None = None
    type: str = "step"

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "type": self.type,
            "optimizer": self.optimizer,
            "step": self.step,
            "t": self.t,
            "calls": self.calls,
            "backward_calls": self.backward_calls,
            "skipped": self.skipped,
            "loss": self.loss,
            "grad_norm": self.grad_norm,
            "group_grad_norms": self.group_grad_norms,
            "lr": self.lr,
            "time": self.time,
        }
        if self.param_grad_norms is not None:
            data["param_grad_norms"] = self.param_grad_norms
            data["update_ratio"] = self.update_ratio
            data["param_update_ratios"] = self.param_update_ratios
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StepRecord:
        """Build a record, restoring the non-finite values that were written as null.

        Reading speed matters here (a trace can hold millions of steps): the parsed
        lists and dicts are used as they are, not copied.
        """
        get = data.get
        record = cls(
            get("optimizer"),
            int(get("step", 0)),
            float(get("t", 0.0)),
            get("calls") or [],
            int(get("backward_calls", 0)),
            bool(get("skipped", False)),
            get("loss"),
            get("grad_norm"),
            get("group_grad_norms") or [],
            get("lr") or [],
            get("time") or {},
            get("param_grad_norms"),
            get("update_ratio"),
            get("param_update_ratios"),
            get("nonfinite"),
        )
        if record.nonfinite:
            restore_nonfinite(record, record.nonfinite)
        return record

    @property
    def is_detail(self) -> bool:
        return self.param_grad_norms is not None


@dataclass
class Anomaly:
    """A diagnostic finding, written when a rule first fires."""

    rule: str
    severity: str
    step: int
    optimizer: int | None
    param: str | None
    message: str
    hint: str
    t: float = 0.0
    type: str = "anomaly"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Anomaly:
        return cls(
            rule=data.get("rule", "?"),
            severity=data.get("severity", "warning"),
            step=int(data.get("step", 0)),
            optimizer=data.get("optimizer"),
            param=data.get("param"),
            message=data.get("message", ""),
            hint=data.get("hint", ""),
            t=float(data.get("t", 0.0)),
        )


@dataclass
class EndRecord:
    """Last line: how the run ended and its totals."""

    status: str
    exit_code: int
    duration: float
    steps: int
    anomalies: dict[str, int] = field(default_factory=dict)
    time: dict[str, float] = field(default_factory=dict)
    type: str = "end"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EndRecord:
        return cls(
            status=data.get("status", "?"),
            exit_code=int(data.get("exit_code", 0)),
            duration=float(data.get("duration", 0.0)),
            steps=int(data.get("steps", 0)),
            anomalies=dict(data.get("anomalies", {})),
            time=dict(data.get("time", {})),
        )


def nonfinite_name(value: float) -> str:
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


def sanitize_nonfinite(data: dict[str, Any]) -> dict[str, Any]:
    """Replace NaN/Inf by null and list them in ``nonfinite`` as ``{"path": "nan"}``.

    Standard JSON has no NaN or Infinity tokens; jq and strict parsers reject them.
    Paths are dotted: ``loss``, ``group_grad_norms.0``, ``param_grad_norms.fc.weight``.
    """
    found: dict[str, str] = {}

    def clean(value: Any, path: str) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            found[path] = nonfinite_name(value)
            return None
        if isinstance(value, dict):
            return {k: clean(v, f"{path}.{k}" if path else k) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v, f"{path}.{i}") for i, v in enumerate(value)]
        return value

    cleaned = clean(data, "")
    cleaned["nonfinite"] = found
    return cleaned


_NONFINITE_VALUES = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def restore_nonfinite(record: StepRecord, nonfinite: dict[str, str]) -> None:
    """Undo `sanitize_nonfinite` on a read record so readers see real NaN/Inf."""
    for path, name in nonfinite.items():
        value = _NONFINITE_VALUES.get(name, math.nan)
        head, _, rest = path.partition(".")
        if not rest:
            if hasattr(record, head):
                setattr(record, head, value)
            continue
        container = getattr(record, head, None)
        if isinstance(container, dict) and rest in container:
            container[rest] = value
        elif isinstance(container, list) and rest.isdigit() and int(rest) < len(container):
            container[int(rest)] = value

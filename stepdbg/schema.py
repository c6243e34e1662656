"""The trace records: the one contract between `stepdbg run` and `show`/`diff`.

Every line of a trace is one of these records as a JSON object, told apart by
its ``type``. docs/trace-format.md documents each field. Readers use
``.get(key, default)`` for every field added after schema 1 and ignore unknown
keys, so older traces keep loading.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

SCHEMA_VERSION = 1

PHASES = ("data", "forward", "backward", "step", "zero_grad")
"""The timed phases of an iteration, in the order a loop runs them; ``time`` also has ``total``
(and ``overhead``). Traces written before ``data`` existed lack it (their ``forward`` holds it)."""

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

_NUMBER = frozenset((int, float, type(None)))
"""The types of a number field as JSON gives it back (null for none, or non-finite)."""
_SECONDS = frozenset((int, float))
_STRING = frozenset((str,))


def _numbers(values: Any) -> bool:
    """Whether ``values`` holds numbers or nulls only."""
    return _NUMBER.issuperset(map(type, values))


def _number_dict(value: Any) -> bool:
    return value is None or (type(value) is dict and _numbers(value.values()))


def _byte_counts(value: Any) -> bool:
    return value is None or (type(value) is dict and all(type(v) is int for v in value.values()))


def _strings(values: Any) -> bool:
    return type(values) is list and _STRING.issuperset(map(type, values))


def _spans(value: Any) -> bool:
    """Flat (phase, start, duration) triples: checked in C, a few type sets, whatever their count."""
    return (
        type(value) is list
        and len(value) % 3 == 0
        and _STRING.issuperset(map(type, value[::3]))
        and _SECONDS.issuperset(map(type, value[1::3]))
        and _SECONDS.issuperset(map(type, value[2::3]))
    )


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
        texts = [data.get(key, "") for key in ("stepdbg", "torch", "python", "command", "cwd", "start", "device")]
        if not _STRING.issuperset(map(type, texts)) or not _strings(data.get("argv", [])):
            raise TypeError("a field of the wrong type")
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
        params = data.get("params", [])
        if not _strings(params):
            raise TypeError("a group's params are not a list of names")
        return cls(params=params, numel=int(data.get("numel", 0)))


@dataclass
class OptimizerInfo:
    """Written once, before an optimizer's first step: its class and parameter names."""

    optimizer: int
    cls: str
    groups: list[ParamGroupInfo]
    ddp: bool = False
    """Its parameters belong to a model wrapped in DistributedDataParallel: after each synced
    backward every rank holds the same gradients (written only when true)."""
    type: str = "optimizer"

    def to_json(self) -> dict[str, Any]:
        data = {
            "type": self.type,
            "optimizer": self.optimizer,
            "class": self.cls,
            "groups": [asdict(g) for g in self.groups],
        }
        if self.ddp:
            data["ddp"] = True
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OptimizerInfo:
        return cls(
            optimizer=int(data["optimizer"]),
            cls=data.get("class", "?"),
            groups=[ParamGroupInfo.from_json(g) for g in data.get("groups", [])],
            ddp=data.get("ddp") is True,
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
    spans: list[str | float] | None = None
    """Where each call lay in the iteration: (phase, start, duration) triples, flattened (see `placed_calls`)."""
    memory: dict[str, int] | None = None
    """Bytes at the step's end: ``rss`` on the CPU, or CUDA's ``allocated`` and ``peak`` (see
    `memory`); None where none was read."""
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
        if self.spans is not None:
            data["spans"] = self.spans
        if self.memory is not None:
            data["memory"] = self.memory
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StepRecord:
        """Build a record, restoring the non-finite values that were written as null.

        Reading speed matters here (a trace can hold millions of steps): the parsed
        lists and dicts are used as they are, not copied.
        """
        get = data.get  # ``spans`` is checked where it is read: see `placed_calls`
        loss, grad_norm, update_ratio = get("loss"), get("grad_norm"), get("update_ratio")
        group_grad_norms, lr, time = get("group_grad_norms") or [], get("lr") or [], get("time") or {}
        param_grad_norms, param_update_ratios = get("param_grad_norms"), get("param_update_ratios")
        calls, skipped, nonfinite = get("calls") or [], get("skipped", False), get("nonfinite")
        memory = get("memory")
        if (  # one pass over the types, in C: a long trace holds millions of records
            type(group_grad_norms) is not list
            or type(lr) is not list
            or type(time) is not dict
            or type(calls) is not list
            or type(skipped) is not bool
            or not _NUMBER.issuperset(
                map(type, (loss, grad_norm, update_ratio, get("optimizer"), *group_grad_norms, *lr))
            )
            or not _NUMBER.issuperset(map(type, time.values()))
            or not _STRING.issuperset(map(type, calls))
            or (param_grad_norms is not None and not _number_dict(param_grad_norms))
            or (param_update_ratios is not None and not _number_dict(param_update_ratios))
            or (nonfinite is not None and type(nonfinite) is not dict)
            or (memory is not None and not _byte_counts(memory))
        ):
            raise TypeError(f"a field of the wrong type: {_first_mistyped(data)}")
        record = cls(
            get("optimizer"),
            int(get("step", 0)),
            float(get("t", 0.0)),
            calls,
            int(get("backward_calls", 0)),
            skipped,
            loss,
            grad_norm,
            group_grad_norms,
            lr,
            time,
            param_grad_norms,
            update_ratio,
            param_update_ratios,
            nonfinite,
            get("spans"),
            memory,
        )
        if nonfinite:
            restore_nonfinite(record, nonfinite)
        if None in time.values():  # a time no one knows (unflagged null) is a time not recorded
            record.time = {phase: seconds for phase, seconds in time.items() if seconds is not None}
        return record

    @property
    def is_detail(self) -> bool:
        return self.param_grad_norms is not None

    def placed_calls(self) -> Iterator[tuple[str, float, float]]:
        """``(phase, start, duration)`` of each call ``spans`` places, in seconds from the iteration's start.

        Checked here, by the one reader that needs them (a timeline), not as every
        record is read: `show` and `diff` would pay for it on millions of records.
        A malformed ``spans`` raises `TypeError`.
        """
        spans = self.spans
        if spans is None:
            return iter(())
        if not _spans(spans):
            raise TypeError("spans is not a list of (phase, start, duration) triples")
        return zip(spans[::3], spans[1::3], spans[2::3])  # type: ignore[arg-type]


def _first_mistyped(data: dict[str, Any]) -> str:
    """The step record field whose value has the wrong type, for the error message: field
    by field, what `StepRecord.from_json` tests in one pass (the wrong-type tests in
    tests/test_show.py hold the two together)."""
    checks = {
        "optimizer": lambda v: _numbers((v,)),
        "loss": lambda v: _numbers((v,)),
        "grad_norm": lambda v: _numbers((v,)),
        "update_ratio": lambda v: _numbers((v,)),
        "group_grad_norms": lambda v: type(v) is list and _numbers(v),
        "lr": lambda v: type(v) is list and _numbers(v),
        "time": _number_dict,
        "nonfinite": lambda v: v is None or type(v) is dict,
        "param_grad_norms": _number_dict,
        "param_update_ratios": _number_dict,
        "calls": _strings,
        "skipped": lambda v: type(v) is bool,
        "memory": _byte_counts,
    }
    return next((name for name, ok in checks.items() if name in data and not ok(data[name])), "?")


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
        texts = (data.get("rule", "?"), data.get("severity", "warning"), data.get("message", ""), data.get("hint", ""))
        if not _STRING.issuperset(map(type, texts)) or not _numbers((data.get("optimizer"),)):
            raise TypeError("a field of the wrong type")
        if data.get("param") is not None and type(data["param"]) is not str:
            raise TypeError("param is not a name")
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
class AnomalySteps:
    """Where a rule fired, repeats included: at each step from ``first_step`` to ``last_step``
    of one optimizer, ``count`` times in all. A rule firing at every step of a long run is
    one record, or one every second or so while it goes on (so that a killed run keeps
    them), not one per step; the records of a rule sum to its count in the end record."""

    rule: str
    optimizer: int | None
    first_step: int
    last_step: int
    count: int
    type: str = "anomaly_steps"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AnomalySteps:
        if type(data.get("rule")) is not str or not _numbers((data.get("optimizer"),)):
            raise TypeError("a field of the wrong type")
        return cls(
            rule=data["rule"],
            optimizer=data.get("optimizer"),
            first_step=int(data["first_step"]),
            last_step=int(data["last_step"]),
            count=int(data["count"]),
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
    severities: dict[str, str] = field(default_factory=dict)
    """The gravest severity each rule was reported at (``input-bound`` is information below its
    warning threshold, a warning past it); rules absent here have their one severity."""
    signal: str | None = None
    """The signal that terminated the run (``"SIGTERM"``), only written with status ``"terminated"``."""
    type: str = "end"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        if self.signal is None:
            del data["signal"]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EndRecord:
        signal = data.get("signal")
        if signal is not None and type(signal) is not str:
            raise TypeError("signal is not a name")
        return cls(
            status=data.get("status", "?"),
            exit_code=int(data.get("exit_code", 0)),
            duration=float(data.get("duration", 0.0)),
            steps=int(data.get("steps", 0)),
            anomalies=_counts(data.get("anomalies", {})),
            time=_times(data.get("time", {})),
            severities=_severities(data.get("severities", {})),
            signal=signal,
        )


def _counts(value: Any) -> dict[str, int]:
    if type(value) is not dict or not all(type(n) is int for n in value.values()):
        raise TypeError("anomalies are not counts by rule")
    return value


def _severities(value: Any) -> dict[str, str]:
    if type(value) is not dict or not all(v in SEVERITIES for v in value.values()):
        raise TypeError("severities are not severities by rule")
    return value


def _times(value: Any) -> dict[str, float]:
    """Seconds by phase; a null (a non-finite total, as the writer writes it) is left out."""
    if not _number_dict(value):
        raise TypeError("time is not seconds by phase")
    return {phase: seconds for phase, seconds in value.items() if seconds is not None}


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
_NUMBER_FIELDS = frozenset(("loss", "grad_norm", "update_ratio"))
_NUMBER_CONTAINERS = frozenset(("group_grad_norms", "lr", "time", "param_grad_norms", "param_update_ratios"))


def restore_nonfinite(record: StepRecord, nonfinite: dict[str, Any]) -> None:
    """Undo `sanitize_nonfinite` on a read record so readers see real NaN/Inf.

    Only a number written as null is restored: a path naming any other field (``calls``,
    ``step``) or a value that is not null is no non-finite number, and is ignored.
    """
    for path, name in nonfinite.items():
        value = _NONFINITE_VALUES.get(name, math.nan) if type(name) is str else math.nan
        head, dot, rest = path.partition(".")
        if not dot:
            if head in _NUMBER_FIELDS and getattr(record, head) is None:
                setattr(record, head, value)
            continue
        container = getattr(record, head) if head in _NUMBER_CONTAINERS else None
        if isinstance(container, dict) and rest in container and container[rest] is None:
            container[rest] = value
        elif (
            isinstance(container, list)
            and rest.isdecimal()
            and int(rest) < len(container)
            and container[int(rest)] is None
        ):
            container[int(rest)] = value

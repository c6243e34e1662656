"""Hypothesis strategies for whole traces: random, but every record one `stepdbg run` could write.

Values go to the extremes the reader must survive: zeros, nulls, NaN and infinities
(encoded by the real writer: null plus a ``nonfinite`` flag), numbers near the float
limits, optional fields left out, text with rich markup and odd characters in it, no
steps at all, no end record, a last line cut by a kill. `corrupt` spoils a valid trace
the ways a disk, an editor or another tool could.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from stepdbg.rules import IDS as RULE_IDS
from stepdbg.schema import PHASES, SEVERITIES
from stepdbg.tracefile import dumps

TEXT = st.one_of(
    st.text(st.characters(exclude_categories=["Cs"]), max_size=8),
    st.sampled_from(["[/x]", "[bold]", "[", "]", ":smile:", "a.b", "", "\x1b[31m", "fc1.weight"]),
)
FINITE = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, -0.0, 1.0, 1e308, -1e308, 5e-324, 1e-300]),
    st.integers(-3, 3),
)
NUMBER = st.one_of(st.none(), FINITE, st.sampled_from([math.nan, math.inf, -math.inf]))
SECONDS = st.one_of(st.sampled_from([0.0, 0, 1e-3, 1e300]), st.floats(0, 10), st.sampled_from([math.inf, math.nan]))
CALL_NAMES = ("zero_grad", "backward", "backward×4", "autograd.grad", "step", "scheduler", "…")
CALLS = st.lists(st.one_of(st.sampled_from(CALL_NAMES), TEXT), max_size=5)
RULE = st.one_of(st.sampled_from(sorted(RULE_IDS)), TEXT)
PARAM_NAMES = st.lists(
    st.one_of(st.sampled_from(["fc1.weight", "fc1.bias", "head.weight"]), TEXT), max_size=4, unique=True
)


def optional(draw: st.DrawFn, data: dict[str, Any], keep: tuple[str, ...] = ("type",)) -> dict[str, Any]:
    """The record, at times with one field left out (readers default every one but ``keep``)."""
    dropped = draw(st.sampled_from([None, None, *(key for key in data if key not in keep)]))
    return {key: value for key, value in data.items() if key != dropped}


def header(draw: st.DrawFn) -> dict[str, Any]:
    data = {
        "type": "header",
        "schema": 1,
        "stepdbg": draw(TEXT),
        "torch": draw(TEXT),
        "python": "3.12.0",
        "argv": draw(st.lists(TEXT, max_size=3)),
        "command": draw(TEXT),
        "cwd": draw(TEXT),
        "start": draw(TEXT),
        "device": draw(st.sampled_from(["cpu", "cuda"])),
        "every": draw(st.integers(0, 4)),
        "pid": 1,
        "rank": draw(st.one_of(st.none(), st.integers(0, 3))),
    }
    return optional(draw, data, keep=("type", "schema"))


def step_record(draw: st.DrawFn, optimizer: int | None, step: int, t: float, names: list[str]) -> dict[str, Any]:
    groups = draw(st.integers(0, 2))
    time = {phase: draw(SECONDS) for phase in draw(st.sets(st.sampled_from([*PHASES, "total", "overhead"])))}
    data: dict[str, Any] = {
        "type": "step",
        "optimizer": optimizer,
        "step": step,
        "t": t,
        "calls": draw(CALLS),
        "backward_calls": draw(st.integers(0, 3)),
        "skipped": draw(st.booleans()),
        "loss": draw(NUMBER),
        "grad_norm": draw(NUMBER),
        "group_grad_norms": [draw(NUMBER) for _ in range(groups)],
        "lr": [draw(NUMBER) for _ in range(groups)],
        "time": time,
    }
    if draw(st.booleans()):  # a detail step
        data["param_grad_norms"] = {name: draw(NUMBER) for name in names if draw(st.booleans())}
        data["update_ratio"] = draw(NUMBER)
        data["param_update_ratios"] = {name: draw(NUMBER) for name in names}
    return optional(draw, data)


def anomaly_record(draw: st.DrawFn, optimizer: int | None, step: int, t: float, names: list[str]) -> dict[str, Any]:
    data = {
        "type": "anomaly",
        "rule": draw(RULE),
        "severity": draw(st.one_of(st.sampled_from(SEVERITIES), TEXT)),
        "step": step,
        "optimizer": optimizer,
        "param": draw(st.one_of(st.none(), st.sampled_from(names or ["w"]))),
        "message": draw(TEXT),
        "hint": draw(TEXT),
        "t": t,
    }
    return optional(draw, data)


@st.composite
def trace_lines(draw: st.DrawFn) -> list[str]:
    """The lines of a trace, each a JSON object, as the writer writes them."""
    count = draw(st.integers(0, 3))
    indices: list[int | None] = [None] if count == 0 else list(range(count))
    names = {index: draw(PARAM_NAMES) for index in indices}
    lines = [header(draw)]
    next_step = dict.fromkeys(indices, 0)
    counts: dict[str, int] = {}
    t = 0.0
    for _ in range(draw(st.integers(0, 12))):
        index = draw(st.sampled_from(indices))
        step = next_step[index] + draw(st.sampled_from([0, 0, 0, 1, 5]))
        next_step[index] = step + 1
        t += draw(st.sampled_from([0.0, 0.01, 1.0]))
        if index is not None and (step == 0 or draw(st.integers(0, 9)) == 0):
            groups = [{"params": names[index], "numel": draw(st.integers(0, 10))}]
            lines.append({"type": "optimizer", "optimizer": index, "class": draw(TEXT), "groups": groups})
        kind = draw(st.sampled_from(["step", "step", "step", "anomaly", "anomaly_steps"]))
        if kind == "step":
            lines.append(step_record(draw, index, step, t, names[index]))
        elif kind == "anomaly_steps":  # where a rule fired: up to this step, or (hand-made) anywhere
            first = draw(st.integers(0, step))
            lines.append(
                {
                    "type": "anomaly_steps",
                    "rule": draw(RULE),
                    "optimizer": index,
                    "first_step": first,
                    "last_step": draw(st.sampled_from([step, first, first + 3])),
                    "count": draw(st.integers(0, 40)),
                }
            )
        else:
            record = anomaly_record(draw, index, step, t, names[index])
            counts[record.get("rule", "?")] = counts.get(record.get("rule", "?"), 0) + draw(st.integers(1, 40))
            lines.append(record)
    if draw(st.booleans()):
        end = {
            "type": "end",
            "status": draw(st.sampled_from(["ok", "error", "interrupted"])),
            "exit_code": draw(st.integers(0, 130)),
            "duration": t + draw(st.floats(0, 10)),
            "steps": sum(1 for line in lines if line["type"] == "step"),
            "anomalies": counts,
            "time": {phase: draw(st.floats(0, 10)) for phase in PHASES},
        }
        lines.append(optional(draw, end))
    return [dumps(line) for line in lines]


@dataclass
class TraceFile:
    """Lines to write as a trace; ``cut`` leaves the last one cut mid-way, as a killed run does."""

    lines: list[str]
    cut: bool = False

    def write(self, path: Path) -> Path:
        """Lone surrogates in a line stand for bytes that are no UTF-8."""
        text = "".join(line + "\n" for line in self.lines)
        if self.cut and len(self.lines) > 1:
            text = text[: len(text) - len(self.lines[-1]) // 2 - 1]
        path.write_bytes(text.encode("utf-8", "surrogateescape"))
        return path


@st.composite
def traces(draw: st.DrawFn) -> TraceFile:
    """A trace any `stepdbg run` could have written, killed mid-line or not."""
    return TraceFile(draw(trace_lines()), cut=draw(st.booleans()))


def retimed(lines: list[str], scale: float) -> list[str]:
    """The same run's trace, with every time scaled and zero_grad taking none: timing is no difference."""
    out = []
    for line in lines:
        record = json.loads(line)
        if record.get("type") == "step" and isinstance(record.get("time"), dict):
            times = record["time"]
            record["time"] = {phase: None if value is None else value * scale for phase, value in times.items()}
            if "zero_grad" in record["time"]:
                record["time"]["zero_grad"] = 0.0
            record.get("nonfinite", {}).pop("time.zero_grad", None)
        out.append(json.dumps(record, ensure_ascii=False))
    return out


JSON_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    FINITE,
    TEXT,
    st.lists(st.integers(0, 2), max_size=2),
    st.dictionaries(TEXT, st.one_of(st.none(), st.integers(0, 3), TEXT), max_size=2),
)


@st.composite
def corrupt(draw: st.DrawFn) -> TraceFile:
    """A valid trace spoiled: a field of any type, a bad ``nonfinite`` map, a line that is no
    JSON object, bytes that are no UTF-8, a newer record type."""
    lines = draw(trace_lines())
    number = draw(st.integers(0, len(lines) - 1))
    record = json.loads(lines[number])
    how = draw(st.sampled_from(["field", "nonfinite", "line", "bytes", "unknown"]))
    if how == "field":
        key = draw(st.one_of(st.sampled_from(sorted(record)), TEXT))
        record[key] = draw(JSON_VALUE)
    elif how == "nonfinite":
        paths = st.one_of(st.sampled_from(sorted(record)), TEXT)
        record["nonfinite"] = draw(st.one_of(st.dictionaries(paths, JSON_VALUE), JSON_VALUE))
    elif how == "unknown":
        record = {"type": draw(TEXT), "value": draw(JSON_VALUE)}
    lines[number] = json.dumps(record, ensure_ascii=False)
    if how == "line":
        lines[number] = draw(st.sampled_from(["[1, 2]", '"text"', "null", "{", "{}", "", "nan"]))
    elif how == "bytes":
        lines[number] = lines[number][: len(lines[number]) // 2] + "\udcff"
    return TraceFile(lines, cut=draw(st.booleans()))

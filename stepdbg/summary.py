"""What `show`, `diff`, `plot` and `export` say about a run, and numbers put in words.

Kept apart from the commands so that they describe a run, format a figure and
take a median the same way.
"""

from __future__ import annotations

import datetime
import math
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from .trace import Trace

NOT_FINISHED = "not finished (no end record: killed, or still running)"


@dataclass
class RunInfo:
    """The run as its header and end record tell it; ``last_t`` stands in for a missing end."""

    path: str
    command: str
    stepdbg: str
    torch: str
    python: str
    device: str
    start: str
    every: int
    rank: int | None
    status: str | None
    exit_code: int | None
    duration: float | None
    steps: int
    truncated: bool
    last_t: float

    @classmethod
    def from_trace(cls, trace: Trace, steps: int, last_t: float) -> RunInfo:
        """Describe ``trace`` once it has been read to the end (the end record comes last)."""
        header, end = trace.header, trace.end
        return cls(
            path=str(trace.path),
            command=header.command or " ".join(header.argv),
            stepdbg=header.stepdbg,
            torch=header.torch,
            python=header.python,
            device=header.device,
            start=header.start,
            every=header.every,
            rank=header.rank,
            status=end.status if end else None,
            exit_code=end.exit_code if end else None,
            duration=end.duration if end else None,
            steps=steps,
            truncated=trace.truncated,
            last_t=last_t,
        )

    @property
    def finished(self) -> bool:
        return self.status is not None

    @property
    def outcome(self) -> str:
        """``ok, exit 0``, ``error, exit 1``, or why there is no end record."""
        if self.status is None:
            return NOT_FINISHED
        return f"{self.status}, exit {self.exit_code}"

    @property
    def versions(self) -> str:
        return f"stepdbg {self.stepdbg} · torch {self.torch} · python {self.python} · {self.device}"

    @property
    def duration_text(self) -> str:
        if self.duration is not None:
            return fmt_seconds(self.duration)
        return f"at least {fmt_seconds(self.last_t)} (to the last record)"

    def to_json(self) -> dict[str, Any]:
        data = {key: value for key, value in vars(self).items() if key != "last_t"}
        data["finished"] = self.finished
        if self.duration is None:
            data["last_t"] = self.last_t
        return data


def is_finite(value: float | None) -> TypeGuard[float]:
    return value is not None and math.isfinite(value)


def fmt_num(value: float | None) -> str:
    """A figure in 3 significant digits; ``–`` for a missing one."""
    if value is None:
        return "–"
    if not math.isfinite(value):
        return str(value)
    return f"{value:.3g}"


def fmt_seconds(seconds: float | None) -> str:
    """Seconds in the unit a person reads best: ``850 µs``, ``12.3 ms``, ``4.56 s``, ``2 h 03 min``."""
    if seconds is None or not math.isfinite(seconds):
        return fmt_num(seconds)
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.3g} ms"
    if seconds < 600:
        return f"{seconds:.3g} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def median(values: Sequence[float]) -> float | None:
    """The median, or None for no values; sorts a copy, so ``values`` may be an array."""
    if not values:
        return None
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


def floats() -> array[float]:
    """A compact float list: 8 bytes a value, where a list of floats takes 32."""
    return array("d")


def listing(names: Sequence[str], limit: int) -> str:
    """``a, b, c +7 more``: the first few names, and how many were left out."""
    more = len(names) - limit
    return ", ".join(names[:limit]) + (f" +{more} more" if more > 0 else "")


def optimizer_label(index: int | None) -> str:
    return "none" if index is None else str(index)


def step_label(optimizer: int | None, step: int, several: bool) -> str:
    """``step 5``, or ``optimizer 1 step 5`` when the run has several optimizers."""
    return f"optimizer {optimizer_label(optimizer)} step {step}" if several else f"step {step}"


def spaced(parts: Iterable[RenderableType]) -> Group:
    """Sections one under the other, a blank line apart."""
    items: list[RenderableType] = []
    for part in parts:
        if items:
            items.append(Text(""))
        items.append(part)
    return Group(*items)


def section(title: str, body: RenderableType) -> Group:
    """A bold title over its body; unlike a table's own title it is not wrapped to the table's width."""
    return Group(Text(title, style="bold"), body)


def data_table(*headers: str, right: tuple[str, ...] = ()) -> Table:
    """The one table style of show and diff: a rule under the headers, no frame."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, collapse_padding=True)
    for header in headers:
        table.add_column(header, justify="right" if header in right else "left")
    return table


TRACE_SUFFIXES = (".jsonl", ".stepdbg")


def trace_label(path: Path) -> str:
    """A trace's name for a legend or a run: ``train.rank0.stepdbg.jsonl`` → ``train.rank0``."""
    name = path.name
    for suffix in TRACE_SUFFIXES:
        name = name.removesuffix(suffix)
    return name or path.name


def trace_labels(paths: Sequence[Path]) -> list[str]:
    """Names for traces shown together; with their folder where two would read the same."""
    labels = [trace_label(path) for path in paths]
    if len(set(labels)) < len(labels):
        labels = [f"{path.parent.name}/{label}" if path.parent.name else label for path, label in zip(paths, labels)]
    return labels


def ranks_of_one_run(traces: Sequence[Trace]) -> bool:
    """Several traces whose headers each give a different rank: one distributed run's ranks."""
    ranks = [trace.header.rank for trace in traces]
    return len(traces) > 1 and None not in ranks and len(set(ranks)) == len(ranks)


def start_time(start: str) -> float | None:
    """The header's ISO 8601 start as seconds since the epoch; None where it cannot be read."""
    try:
        return datetime.datetime.fromisoformat(start).timestamp()
    except ValueError:
        return None

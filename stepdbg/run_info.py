"""A run as its trace tells it: what ran, how it ended, its name, when it started.

`RunInfo` is what `show`, `diff`, `plot` and `export` all say about a run, from the
trace's header and end record; kept apart from the commands so that they describe a
run the same way.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .style import fmt_seconds
from .tracefile import Trace

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

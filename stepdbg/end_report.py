"""The end-of-run report: the few lines a run prints once its end record is written.

Its steps and where their time went, whether tracing stopped early, the rules that
fired, where the trace is; then a line for each rank started with
``torch.multiprocessing`` (`spawned_ranks`), read from that rank's end record.
"""

from __future__ import annotations

from collections.abc import Mapping

from rich.text import Text

from .schema import PHASES, EndRecord
from .style import BAD, CAUTION, GOOD, fmt_duration, fmt_share

TIMED = (*PHASES, "overhead")
"""The end record's times, in the order the report gives their shares (``overhead`` is stepdbg's own)."""


def end_report(
    end: EndRecord,
    trace: str,
    prefix: str,
    ranks: Mapping[int, tuple[str, EndRecord | None]] | None = None,
    stopped: str | None = None,
) -> list[str | Text]:
    """The report's lines, each beginning with ``prefix``; ``ranks``: each spawned rank's trace
    and end record (None for a rank that wrote none); ``stopped``: the internal error that
    stopped tracing, if one did."""
    lines: list[str | Text] = []
    if end.steps:
        total = sum(end.time.get(phase, 0.0) for phase in TIMED) or 1.0
        shares = " · ".join(
            f"{phase} {fmt_share(end.time.get(phase, 0.0) / total)}" for phase in TIMED if phase in end.time
        ).replace("overhead", "stepdbg")
        lines.append(f"{prefix} {end.steps} steps in {fmt_duration(end.duration)} ({shares})")
    elif stopped is None:
        lines.append(f"{prefix} no optimizer step or backward pass in this process ({fmt_duration(end.duration)})")
    if stopped is not None:
        lines.append(Text(f"{prefix} tracing stopped early by an internal error ({stopped})", style=BAD))
    if end.anomalies:
        lines.append(Text(f"{prefix} anomalies: {_counts(end.anomalies)}", style=CAUTION))
    elif end.steps:
        lines.append(Text(f"{prefix} no anomalies", style=GOOD))
    lines.append(f"{prefix} trace written to {trace}")
    for rank, (rank_trace, rank_end) in (ranks or {}).items():
        lines.append(f"stepdbg: rank {rank}: {_rank_said(rank_end)}, trace {rank_trace}")
    return lines


def _rank_said(end: EndRecord | None) -> str:
    if end is None:
        return "no end record (killed, or still running)"
    status = "" if end.status == "ok" else f" ({end.status}, exit {end.exit_code})"
    found = f"anomalies: {_counts(end.anomalies)}" if end.anomalies else "no anomalies"
    return f"{end.steps} steps{status}, {found}"


def _counts(anomalies: Mapping[str, int]) -> str:
    return ", ".join(f"{rule} ×{count}" for rule, count in anomalies.items())

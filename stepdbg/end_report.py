"""The end-of-run report: the few lines a run prints once its end record is written.

Its steps and where their time went, how it ended if a signal ended it, whether
tracing stopped early, the rules that fired, where the trace is; then a line for each
rank started with ``torch.multiprocessing`` (`spawned_ranks`), read from that rank's
end record. A process that only started ranks reports them, not itself. Last, where
``--strict`` fails the run, the line that says why (`strict_line`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

from rich.text import Text

from .schema import PHASES, EndRecord
from .style import BAD, CAUTION, GOOD, fmt_duration, fmt_share

TIMED = (*PHASES, "overhead")
"""The end record's times, in the order the report gives their shares (``overhead`` is stepdbg's own)."""
STRICT_NAMED = 5
"""Problems the --strict line names; it counts the rest."""


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
    if ranks and not end.steps and not end.anomalies and stopped is None:
        lines: list[str | Text] = [
            f"{prefix} {len(ranks)} ranks started with torch.multiprocessing, in {fmt_duration(end.duration)}",
            *_terminated(end, prefix),
        ]
    else:
        lines = _own_lines(end, trace, prefix, stopped)
    for rank, (rank_trace, rank_end) in (ranks or {}).items():
        lines.append(f"stepdbg: rank {rank}: {_rank_said(rank_end)}, trace {rank_trace}")
    return lines


def _own_lines(end: EndRecord, trace: str, prefix: str, stopped: str | None) -> list[str | Text]:
    """What this process did: its steps, how it ended, its anomalies, its trace."""
    lines: list[str | Text] = []
    if end.steps:
        total = sum(end.time.get(phase, 0.0) for phase in TIMED) or 1.0
        shares = " · ".join(
            f"{phase} {fmt_share(end.time[phase] / total)}" for phase in TIMED if _shown(phase, end.time)
        ).replace("overhead", "stepdbg")
        lines.append(f"{prefix} {end.steps} steps in {fmt_duration(end.duration)} ({shares})")
    elif stopped is None:
        lines.append(f"{prefix} no optimizer step or backward pass in this process ({fmt_duration(end.duration)})")
    lines += _terminated(end, prefix)
    if stopped is not None:
        lines.append(Text(f"{prefix} tracing stopped early by an internal error ({stopped})", style=BAD))
    if end.anomalies:
        lines.append(Text(f"{prefix} anomalies: {_counts(end.anomalies)}", style=CAUTION))
    elif end.steps:
        lines.append(Text(f"{prefix} no anomalies", style=GOOD))
    lines.append(f"{prefix} trace written to {trace}")
    return lines


def _shown(phase: str, times: Mapping[str, float]) -> bool:
    """Whether the end line gives ``phase``'s share: not ``data`` for a loop that never waited
    on a DataLoader (its batches made in the loop, or no batches at all)."""
    return phase in times and (phase != "data" or times[phase] > 0.0)


def _terminated(end: EndRecord, prefix: str) -> list[str | Text]:
    return [Text(f"{prefix} terminated by {end.signal}", style=BAD)] if end.signal is not None else []


def _rank_said(end: EndRecord | None) -> str:
    if end is None:
        return "no end record (killed, or still running)"
    status = "" if end.status == "ok" else f" ({end.status}, exit {end.exit_code})"
    found = f"anomalies: {_counts(end.anomalies)}" if end.anomalies else "no anomalies"
    return f"{end.steps} steps{status}, {found}"


def _counts(anomalies: Mapping[str, int]) -> str:
    return ", ".join(f"{rule} ×{count}" for rule, count in anomalies.items())


def strict_line(problems: Sequence[tuple[str, str]], prefix: str) -> Text:
    """Why ``--strict`` fails the run, from ``(severity, what and where)`` for each problem:
    how many errors and warnings, and the first few."""
    counts = Counter(severity for severity, _ in problems)
    tally = ", ".join(
        f"{count} {severity}{'s' if count > 1 else ''}"
        for severity in ("error", "warning")
        if (count := counts[severity])
    )
    named = [where for _, where in problems[:STRICT_NAMED]]
    if len(problems) > STRICT_NAMED:
        named.append(f"{len(problems) - STRICT_NAMED} more")
    return Text(f"{prefix} --strict: {tally} ({', '.join(named)})", style=BAD)

"""``stepdbg show --format text`` of several traces: the ranks side by side, and what the
comparison (`ranks.RankComparison`) tells: the straggler, ranks out of step or out of sync."""

from __future__ import annotations

from rich.console import RenderableType
from rich.text import Text

from ..ranks import (
    STRAGGLER_MARGIN,
    WORK_PHASES,
    RankComparison,
    RankStats,
    Straggler,
    SyncDifference,
)
from ..schema import PHASES
from ..style import MISSING, data_table, fmt_bytes, fmt_num, fmt_seconds, fmt_share, section, spaced
from .output import Output

COLUMNS = {"data": "data", "forward": "fwd", "backward": "bwd", "step": "step", "zero_grad": "zero"}
"""Short headers for `PHASES`, so that the table reads in 80 columns."""


def _ms(seconds: float | None) -> str:
    return fmt_num(seconds * 1e3 if seconds is not None else None)


def _row(rank: RankStats, phases: list[str]) -> list[str]:
    share = rank.data_share
    return [
        rank.label,
        str(sum(rank.counts.values())),
        _ms(rank.median("total")),
        *(_ms(rank.median(phase)) for phase in phases),
        fmt_share(share),
        fmt_bytes(rank.memory.peak),
    ]


def render_table(comparison: RankComparison) -> RenderableType:
    phases = [phase for phase in PHASES if any(phase in rank.phases for rank in comparison.ranks)]
    headers = ["rank", "steps", "total", *(COLUMNS[phase] for phase in phases), "data %", "memory"]
    table = data_table(*headers, right=tuple(headers[1:]))
    for column in table.columns:
        column.no_wrap = True
    for rank in comparison.ranks:
        table.add_row(*_row(rank, phases))
    view = comparison.filter.description
    return section(f"ranks side by side (medians in ms a step, memory peak{'; ' + view if view else ''})", table)


def straggler_text(straggler: Straggler | None, step: float | None) -> str:
    if straggler is None:
        return (
            f"No straggler: no rank's own work ({', '.join(WORK_PHASES)}) takes longer than the others'"
            f" by {fmt_share(STRAGGLER_MARGIN)} of a step ({fmt_seconds(step * STRAGGLER_MARGIN) if step else MISSING})."
        )
    excess = f"its {straggler.phase} takes {fmt_seconds(straggler.excess)} a step more than the other ranks'"
    if straggler.synchronous:
        waited = f" in {straggler.waited_in} ({fmt_seconds(straggler.wait)} a step)" if straggler.waited_in else ""
        return f"{straggler.label} is the straggler: {excess}, and they wait for it{waited}."
    return (
        f"{straggler.label} is the slowest: {excess}, and its steps take about that much longer:"
        " the other ranks do not wait for it (the ranks do not synchronize?)."
    )


def step_counts_text(counts: dict[str, dict[str, int]]) -> list[str]:
    return [
        f"Out of step: optimizer {optimizer} has "
        + ", ".join(f"{n} steps on {label}" for label, n in by_rank.items())
        + "."
        for optimizer, by_rank in counts.items()
    ]


def sync_text(difference: SyncDifference) -> str:
    norms = ", ".join(f"{label} {fmt_num(value)}" for label, value in difference.values.items())
    where = (
        "though DDP all-reduces every rank's gradients to the same values"
        if difference.ddp
        else "while they agree at the others"
    )
    return (
        f"Out of sync: the gradient norms of optimizer {difference.optimizer} differ between ranks at"
        f" {difference.differing} of {difference.compared} steps (first at step {difference.first_step}: {norms}),"
        f" {where}: a rank stepped on gradients it did not sync (a no_sync() block left open over the last"
        " backward of an accumulation, or an all-reduce one rank skipped)."
    )


def render_ranks(comparison: RankComparison) -> RenderableType:
    lines: list[str] = []
    if comparison.note is not None:
        lines.append(f"No straggler is named: {comparison.note}.")
    else:
        lines.append(straggler_text(comparison.straggler, comparison.step_median))
    lines += step_counts_text(comparison.step_counts or {})
    lines += [sync_text(difference) for difference in comparison.sync]
    verdict = Text("\n".join(lines))
    return spaced([render_table(comparison), verdict])


def write(comparison: RankComparison, out: Output) -> None:
    out.text.print(render_ranks(comparison))

"""What `stepdbg run` shows on stderr while the script runs, and the summary after.

On a terminal: a table kept in the bottom lines of the screen, redrawn at most
4 times a second (see `LiveRegion`), with the script's own output scrolling
above it unchanged. In a Jupyter notebook: the same table as one output of the
cell, updated in place (see `notebook`). Elsewhere (stderr not a terminal): one
plain line every few seconds. Anomalies are printed as they happen, in every mode.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import TextIO

from rich import box
from rich.cells import cell_len
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from .notebook import NotebookTable
from .schema import PHASES, Anomaly, EndRecord, StepRecord

PLAIN_INTERVAL = 5.0
SEVERITY_STYLE = {"info": "cyan", "warning": "yellow", "error": "bold red"}
REFRESH_INTERVAL = 0.25
TABLE_PHASES = ("data", "fwd", "bwd", "step", "zero")
"""Column headers for `PHASES`, short enough for an 80-column terminal."""
LEADING_COLUMNS = ("opt", "step", "loss", "grad norm", "lr")
"""The table's columns before the phase times."""
KEPT_FIRST = ("step", "loss", "grad norm", "opt", "lr")
"""Where the terminal is too narrow for the whole table, the columns it keeps, in this order,
then the phase times in theirs: whole columns go, so that no value is ever cut short."""
COLUMN_GAP = 3
"""Screen columns between two table columns: a cell's padding either side of the box's divider."""
TABLE_TITLE = "stepdbg · phase times in ms, mean since the last refresh"
SAVE_CURSOR, RESTORE_CURSOR = "\x1b7", "\x1b8"
RELEASE = f"{SAVE_CURSOR}\x1b[r{RESTORE_CURSOR}\x1b[J"
"""The scroll region back to the whole screen, then everything below the cursor cleared:
the table is there, wherever a resize since has moved it (never the script's lines:
the script writes at the cursor)."""
MIN_SCROLL_ROWS = 4
"""The table is shown only where this many lines are left above it for the script."""
TABLE_ROWS = 8
"""The table shows the optimizers stepped last, this many at most (a loop may build one
per iteration, or one per parameter)."""
STRICT_NAMED = 5
"""Problems the --strict line names; it counts the rest."""


class LiveRegion:
    """The table in the terminal's bottom lines, under a scroll region that holds the rest.

    The script's output scrolls in the region above, byte for byte and partial lines
    included, whoever writes it: ``print``, ``os.write``, a subprocess, a DataLoader
    worker, a C++ library on fd 2. The table is drawn below the region between a cursor
    save and restore, in one write (a terminal does not interleave another write into
    it), so no line the script wrote is ever moved over or erased; rich's ``Live``
    instead moves up over the lines it drew, and erases whatever another writer put
    there since. `stop` gives the region back (a SIGKILL leaves it set: ``reset``
    restores the terminal). Refreshes happen on the training thread, from `refresh`.
    """

    def __init__(self, console: Console, render: Callable[[], RenderableType], clock: Callable[[], float]) -> None:
        self.console = console
        self.render = render
        self.clock = clock
        self._lock = threading.RLock()
        self._terminal: TextIO | None = None
        self._rows = 0
        """The terminal's height when the region was set."""
        self._height = 0
        """The table's lines under the region; 0 while no region is set."""
        self._last_draw = float("-inf")

    def start(self) -> None:
        """Draw the (empty) table at once: the script has written nothing yet, so the cursor is
        at the start of a line, and room is made below it without scrolling a line needlessly."""
        self._terminal = sys.stderr
        with self._lock:
            self._draw(at_line_start=True)

    def detach(self) -> None:
        """In a forked child: the region on the terminal is the parent's; leave it alone.
        With a lock of the child's own: a thread of the parent may have held the inherited one."""
        self._lock = threading.RLock()
        self._height = 0
        self._terminal = None

    def stop(self) -> None:
        with self._lock:
            self._give_back()
            self._terminal = None

    def refresh(self) -> None:
        """Redraw, at most every `REFRESH_INTERVAL` seconds."""
        now = self.clock()
        if now - self._last_draw < REFRESH_INTERVAL or self._terminal is None:
            return
        with self._lock:
            self._draw(at_line_start=False)

    def _draw(self, at_line_start: bool) -> None:
        assert self._terminal is not None
        self._last_draw = self.clock()
        try:
            rows = os.get_terminal_size(self._terminal.fileno()).lines
        except (OSError, ValueError):
            return
        with self.console.capture() as capture:
            self.console.print(self.render())
        lines = capture.get().rstrip("\n").split("\n")
        if len(lines) + MIN_SCROLL_ROWS > rows:  # no room for the table: the script's output first
            self._give_back()
            return
        setup = ""
        if (rows, len(lines)) != (self._rows, self._height):
            setup = self._make_room(rows, len(lines), at_line_start)
        top = rows - len(lines) + 1
        table = "".join(f"\x1b[{top + i};1H{line}\x1b[K" for i, line in enumerate(lines))
        self._write(f"{setup}{SAVE_CURSOR}{table}{RESTORE_CURSOR}")

    def _make_room(self, rows: int, height: int, at_line_start: bool) -> str:
        """The sequence that sets the scroll region above ``height`` lines for the table.

        Growing: the lines above scroll up as many lines as the table gains, and the cursor
        follows its line up (at the start of a line, new lines below it are enough: nothing
        scrolls unless the cursor is near the bottom). Shrinking: the lines given back are
        cleared. A resized terminal starts afresh.
        """
        reset = ""
        if rows != self._rows:  # first, or resized: whatever region was set is of no use
            reset = RELEASE if self._rows else ""
            self._height = 0
        old_bottom = rows - self._height
        new_bottom = rows - height
        if height > self._height:
            grow = height - self._height
            if at_line_start and not self._height:  # setting the region homes the cursor: save it
                sequence = "\n" * grow + f"\x1b[{grow}A{SAVE_CURSOR}\x1b[1;{new_bottom}r{RESTORE_CURSOR}"
            else:
                scroll_up = f"\x1b[{old_bottom};1H" + "\n" * grow
                sequence = f"{SAVE_CURSOR}{scroll_up}\x1b[1;{new_bottom}r{RESTORE_CURSOR}\x1b[{grow}A"
        else:
            sequence = f"{SAVE_CURSOR}\x1b[{old_bottom + 1};1H\x1b[J\x1b[1;{new_bottom}r{RESTORE_CURSOR}"
        self._rows, self._height = rows, height
        return reset + sequence

    def _give_back(self) -> None:
        """Release the scroll region and clear the table; the cursor stays where the script left it."""
        if self._height and self._terminal is not None:
            self._write(RELEASE)
        self._rows = self._height = 0

    def _write(self, sequence: str) -> None:
        assert self._terminal is not None
        self._terminal.write(sequence)
        self._terminal.flush()


def _live_view(
    console: Console, render: Callable[[], RenderableType], clock: Callable[[], float]
) -> LiveRegion | NotebookTable | None:
    """The table where it can be redrawn: a terminal's bottom lines, or a notebook cell's output.
    A dumb terminal (TERM=dumb: Emacs' shell) cannot move the cursor: plain lines there."""
    if console.is_jupyter:
        return NotebookTable(render, clock, REFRESH_INTERVAL)
    if console.is_terminal and not console.is_dumb_terminal:
        return LiveRegion(console, render, clock)
    return None


def fmt(value: float | None, spec: str = ".4g") -> str:
    return "-" if value is None else format(value, spec)


def fmt_ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.2f} ms"


def anomaly_text(anomaly: Anomaly, prefix: str = "stepdbg:") -> Text:
    """One line per anomaly: severity, rule, where, what, and the fix (for information, a note)."""
    where = f"step {anomaly.step}" + (f", optimizer {anomaly.optimizer}" if anomaly.optimizer is not None else "")
    text = Text(f"{prefix} ")
    text.append(f"{anomaly.severity} {anomaly.rule}", style=SEVERITY_STYLE.get(anomaly.severity, ""))
    lead = "Note" if anomaly.severity == "info" else "Fix"
    text.append(f" ({where}): {anomaly.message}. {lead}: {anomaly.hint}")
    return text


class View:
    """The terminal side of a run: live table or plain lines, anomalies, summary."""

    def __init__(
        self, console: Console, live: bool, quiet: bool, clock: Callable[[], float] = time.monotonic, label: str = ""
    ) -> None:
        self.console = console
        self.quiet = quiet
        self.prefix = f"stepdbg[{label}]:" if label else "stepdbg:"
        """Begins each line: a rank started by torch.multiprocessing says which it is."""
        self.clock = clock
        self.latest: dict[int | None, StepRecord] = {}
        """The last record of each optimizer in the table (`TABLE_ROWS` at most)."""
        self._window: dict[int | None, list[float]] = {}
        """Per optimizer: [steps, then seconds per phase] since the last refresh."""
        self._shown: dict[int | None, list[float]] = {}
        self.anomaly_count = 0
        self._region = _live_view(console, self.table, clock) if live and not quiet else None
        self._last_plain = clock()

    def start(self) -> None:
        if self._region is not None:
            self._region.start()

    def stop(self) -> None:
        if self._region is not None:
            self._region.stop()

    def detach(self) -> None:
        """In a forked child: the terminal is the parent's run's; draw and print nothing more."""
        if self._region is not None:
            self._region.detach()
            self._region = None
        self.quiet = True

    def on_step(self, record: StepRecord) -> None:
        latest = self.latest
        latest[record.optimizer] = record
        if len(latest) > TABLE_ROWS:
            self._forget_least_recent()
        if self._region is not None:
            window = self._window.get(record.optimizer)
            if window is None:
                window = self._window[record.optimizer] = [0.0] * (1 + len(PHASES))
            window[0] += 1
            for index, phase in enumerate(PHASES, 1):
                window[index] += record.time.get(phase, 0.0)
            self._region.refresh()
            return
        if self.quiet:
            return
        now = self.clock()
        if now - self._last_plain >= PLAIN_INTERVAL:
            self._last_plain = now
            self._line(self._plain_line(record))

    def _forget_least_recent(self) -> None:
        """Keep the table to the `TABLE_ROWS` optimizers that stepped last."""
        stale = min(self.latest.items(), key=lambda item: item[1].t)[0]
        del self.latest[stale]
        self._window.pop(stale, None)
        self._shown.pop(stale, None)

    def note(self, text: str) -> None:
        """A line about the run itself (where its trace goes), unless quiet."""
        if not self.quiet:
            self._line(f"{self.prefix} {text}")

    def on_anomaly(self, anomaly: Anomaly) -> None:
        self.anomaly_count += 1
        if not self.quiet:
            self._line(anomaly_text(anomaly, self.prefix))

    def _line(self, line: str | Text) -> None:
        """One line as it is: never read as rich markup or emoji codes (a rank label, a path with
        brackets or colons). On a terminal, wrapped at word boundaries to its width, for a
        reader; to a pipe or a file, whole, one message a line: grep and CI log viewers (which
        wrap lines themselves) find each message on one line, whatever the width it was run at."""
        self.console.print(line, markup=False, emoji=False, highlight=False, soft_wrap=not self.console.is_terminal)

    def _plain_line(self, record: StepRecord) -> str:
        who = f"optimizer {record.optimizer}" if record.optimizer is not None else "no optimizer"
        lr = fmt(record.lr[0]) if record.lr else "-"
        return (
            f"{self.prefix} {who} step {record.step}: loss {fmt(record.loss)}, grad norm {fmt(record.grad_norm)}, "
            f"lr {lr}, {fmt_ms(record.time.get('total'))}/step"
        )

    def _phase_means(self, optimizer: int | None) -> list[float]:
        """Mean seconds per phase over the steps since the last refresh (the last shown if none)."""
        window = self._window.pop(optimizer, None)
        if window is not None and window[0]:
            self._shown[optimizer] = [total / window[0] for total in window[1:]]
        return self._shown.get(optimizer, [0.0] * len(PHASES))

    def table(self) -> RenderableType:
        """One row per optimizer (phase times in ms, averaged since the last refresh), then
        each optimizer's calls and the anomaly count: fits an 80-column terminal, and a
        narrower one with fewer columns (`KEPT_FIRST`)."""
        rows, calls = [], []
        for optimizer, record in sorted(list(self.latest.items()), key=lambda item: -1 if item[0] is None else item[0]):
            who = "-" if optimizer is None else str(optimizer)
            rows.append([
                who,
                str(record.step),
                fmt(record.loss),
                fmt(record.grad_norm),
                fmt(record.lr[0]) if record.lr else "-",
                *(fmt(mean * 1e3, ".2f") for mean in self._phase_means(optimizer)),
            ])
            calls.append(f"calls ({'no optimizer' if optimizer is None else f'opt {who}'}): {' '.join(record.calls)}")
        if not calls:  # before the first step: a row of its own, so that the table need not grow for it
            rows.append(["-"] * (len(LEADING_COLUMNS) + len(TABLE_PHASES)))
            calls.append("calls: none yet")
        table = Table(
            title=Text(TABLE_TITLE, no_wrap=True, overflow="ellipsis"),
            title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False, show_edge=False,
        )
        headers = (*LEADING_COLUMNS, *TABLE_PHASES)
        shown = columns_that_fit([list(headers), *rows], self.console.width)
        for index in shown:
            table.add_column(headers[index], justify="right", no_wrap=True)
        for row in rows:
            table.add_row(*(row[index] for index in shown))
        count = self.anomaly_count
        footer = Text(f"anomalies: {count}", style="yellow" if count else "green", no_wrap=True, overflow="ellipsis")
        return Group(table, Text("\n".join(calls), no_wrap=True, overflow="ellipsis"), footer)

    def summary(
        self,
        end: EndRecord,
        trace: str,
        ranks: Mapping[int, tuple[str, EndRecord | None]] | None = None,
        stopped: str | None = None,
    ) -> None:
        """A few lines after the run: steps, where the time went, anomalies, the trace;
        then a line for each rank started with torch.multiprocessing (`children`). A process
        that only started ranks summarises them, not itself. ``stopped``: the internal error
        that stopped tracing, if one did."""
        if self.quiet:
            return
        if ranks and not end.steps and not end.anomalies and stopped is None:
            self._line(f"{self.prefix} {len(ranks)} ranks started with torch.multiprocessing, in {end.duration:.2f} s")
            self._terminated(end)
        else:
            self._own_summary(end, trace, stopped)
        for rank, (rank_trace, rank_end) in (ranks or {}).items():
            if rank_end is None:
                said = "no end record (killed, or still running)"
            else:
                status = "" if rank_end.status == "ok" else f" ({rank_end.status}, exit {rank_end.exit_code})"
                said = f"{rank_end.steps} steps{status}, " + (
                    f"anomalies: {_counts(rank_end.anomalies)}" if rank_end.anomalies else "no anomalies"
                )
            self._line(f"stepdbg: rank {rank}: {said}, trace {rank_trace}")

    def _own_summary(self, end: EndRecord, trace: str, stopped: str | None) -> None:
        if end.steps:
            total = sum(end.time.get(phase, 0.0) for phase in (*PHASES, "overhead")) or 1.0
            shares = " · ".join(
                f"{phase} {end.time.get(phase, 0.0) / total:.0%}" for phase in (*PHASES, "overhead") if phase in end.time
            ).replace("overhead", "stepdbg")
            self._line(f"{self.prefix} {end.steps} steps in {end.duration:.2f} s ({shares})")
        elif stopped is None:
            self._line(f"{self.prefix} no optimizer step or backward pass in this process ({end.duration:.2f} s)")
        self._terminated(end)
        if stopped is not None:
            self._line(Text(f"{self.prefix} tracing stopped early by an internal error ({stopped})", style="red"))
        if end.anomalies:
            self._line(Text(f"{self.prefix} anomalies: {_counts(end.anomalies)}", style="yellow"))
        elif end.steps:
            self._line(Text(f"{self.prefix} no anomalies", style="green"))
        self._line(f"{self.prefix} trace written to {trace}")

    def _terminated(self, end: EndRecord) -> None:
        if end.signal is not None:
            self._line(Text(f"{self.prefix} terminated by {end.signal}", style="red"))

    def strict_failure(self, problems: Sequence[tuple[str, str]]) -> None:
        """The line that says why ``--strict`` fails the run, ``(severity, what and where)`` for
        each problem: printed even when quiet (in CI, a red build needs its reason)."""
        counts = Counter(severity for severity, _ in problems)
        tally = ", ".join(
            f"{count} {severity}{'s' if count > 1 else ''}"
            for severity in ("error", "warning")
            if (count := counts[severity])
        )
        named = [where for _, where in problems[:STRICT_NAMED]]
        if len(problems) > STRICT_NAMED:
            named.append(f"{len(problems) - STRICT_NAMED} more")
        self._line(Text(f"{self.prefix} --strict: {tally} ({', '.join(named)})", style="red"))


def columns_that_fit(lines: list[list[str]], width: int) -> list[int]:
    """Which of the table's columns to show, in its order, given its ``lines`` (headers, then
    rows): as many as ``width`` holds, taken in the order `KEPT_FIRST` then the phase times
    (never fewer than one)."""
    widths = [max(cell_len(line[index]) for line in lines) for index in range(len(lines[0]))]
    order = [LEADING_COLUMNS.index(name) for name in KEPT_FIRST]
    order += range(len(LEADING_COLUMNS), len(widths))
    shown: list[int] = []
    used = -COLUMN_GAP
    for index in order:
        used += COLUMN_GAP + widths[index]
        if used > width and shown:
            break
        shown.append(index)
    return sorted(shown)


def _counts(anomalies: Mapping[str, int]) -> str:
    return ", ".join(f"{rule} ×{count}" for rule, count in anomalies.items())

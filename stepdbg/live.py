"""The live table: a run's last steps, one row per optimizer, redrawn while the script runs.

On a terminal, kept in the bottom lines of the screen and redrawn at most 4 times a
second (see `LiveRegion`; a thread of its own renders it), with the script's own
output scrolling above it unchanged; in a Jupyter notebook, one output of the cell,
updated in place (see `notebook`). Where neither can be redrawn, a run prints
progress lines instead (`progress`); `run_output` decides which.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from typing import TextIO

from rich import box
from rich.cells import cell_len
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from .notebook import NotebookTable
from .schema import PHASES, StepRecord
from .style import CAUTION, GOOD, MISSING, RUN_DIGITS, fmt_ms, fmt_num

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


class LiveRegion:
    """The table in the terminal's bottom lines, under a scroll region that holds the rest.

    The script's output scrolls in the region above, byte for byte and partial lines
    included, whoever writes it: ``print``, ``os.write``, a subprocess, a DataLoader
    worker, a C++ library on fd 2. The table is drawn below the region between a cursor
    save and restore, in one write (a terminal does not interleave another write into
    it), so no line the script wrote is ever moved over or erased; rich's ``Live``
    instead moves up over the lines it drew, and erases whatever another writer put
    there since. `stop` gives the region back (a SIGKILL leaves it set: ``reset``
    restores the terminal).

    Rendering the table takes milliseconds of rich's Python: a thread of its own does it
    (`refresh` wakes it), so that it is not stepdbg's time in the loop's steps. Only
    writing the lines it rendered last, a few microseconds, is left to `refresh`, on the
    thread that runs the loop, where the script writes too: a resize is met at the next
    refresh, as before, and the table shown is at most one refresh old.
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
        self._rendered: list[str] = []
        """The table's lines as the rendering thread left them last."""
        self._due = threading.Event()
        """Set by `refresh` to have the table rendered anew."""
        self._renderer: threading.Thread | None = None

    def start(self) -> None:
        """Draw the (empty) table at once: the script has written nothing yet, so the cursor is
        at the start of a line, and room is made below it without scrolling a line needlessly.
        Then the rendering thread starts."""
        self._terminal = sys.stderr
        self._rendered = self._render()
        with self._lock:
            self._draw(at_line_start=True)
        self._renderer = threading.Thread(target=self._render_when_due, name="stepdbg-live", daemon=True)
        self._renderer.start()

    def detach(self) -> None:
        """In a forked child: the region on the terminal is the parent's; leave it alone. The
        rendering thread is the parent's (a child has only the thread that forked), and a thread
        of the parent may have held the inherited lock or event: the child gets its own."""
        self._lock = threading.RLock()
        self._due = threading.Event()
        self._renderer = None
        self._height = 0
        self._terminal = None

    def stop(self) -> None:
        renderer, self._renderer = self._renderer, None
        if renderer is not None:  # it sees `_renderer` gone as it wakes
            self._due.set()
            renderer.join()
        with self._lock:
            self._give_back()
            self._terminal = None

    def refresh(self) -> None:
        """Redraw, at most every `REFRESH_INTERVAL` seconds, with the table rendered last;
        the rendering thread renders it anew."""
        now = self.clock()
        if now - self._last_draw < REFRESH_INTERVAL or self._terminal is None:
            return
        with self._lock:
            self._draw(at_line_start=False)
        self._due.set()

    def _render_when_due(self) -> None:
        while True:
            self._due.wait()
            self._due.clear()
            if self._renderer is None:  # stopped
                return
            self._rendered = self._render()

    def _render(self) -> list[str]:
        with self.console.capture() as capture:
            self.console.print(self.render())
        return capture.get().rstrip("\n").split("\n")

    def _draw(self, at_line_start: bool) -> None:
        assert self._terminal is not None
        self._last_draw = self.clock()
        try:
            rows = os.get_terminal_size(self._terminal.fileno()).lines
        except (OSError, ValueError):
            return
        lines = self._rendered
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


def redrawn_where(
    console: Console, render: Callable[[], RenderableType], clock: Callable[[], float]
) -> LiveRegion | NotebookTable | None:
    """Where the table can be redrawn: a terminal's bottom lines, or a notebook cell's output;
    None elsewhere. A dumb terminal (TERM=dumb: Emacs' shell) cannot move the cursor."""
    if console.is_jupyter:
        return NotebookTable(render, clock, REFRESH_INTERVAL)
    if console.is_terminal and not console.is_dumb_terminal:
        return LiveRegion(console, render, clock)
    return None


class LiveTable:
    """The table of a run's last steps, drawn where it can be redrawn (`redrawn_where`) when
    ``redraw`` asks for it. Fed every step record (`add`) and told of every anomaly."""

    def __init__(self, console: Console, clock: Callable[[], float], redraw: bool) -> None:
        self.console = console
        self.region = redrawn_where(console, self.render, clock) if redraw else None
        """Where the table is drawn; None: nowhere (it is still kept: a test may render it)."""
        self.latest: dict[int | None, StepRecord] = {}
        """The last record of each optimizer in the table (`TABLE_ROWS` at most)."""
        self._window: dict[int | None, list[float]] = {}
        """Per optimizer: [steps, then seconds per phase] since the last refresh."""
        self._shown: dict[int | None, list[float]] = {}
        self._window_lock = threading.Lock()
        """The training thread adds to `_window`, the table's rendering thread takes it (and
        sets `_shown`, which the training thread trims)."""
        self.anomaly_count = 0

    def start(self) -> None:
        if self.region is not None:
            self.region.start()

    def stop(self) -> None:
        if self.region is not None:
            self.region.stop()

    def detach(self) -> None:
        """In a forked child: the terminal or cell is the parent's run's; draw nothing more."""
        if self.region is not None:
            self.region.detach()
            self.region = None

    def add(self, record: StepRecord) -> None:
        latest = self.latest
        latest[record.optimizer] = record
        if len(latest) > TABLE_ROWS:
            self._forget_least_recent()
        if self.region is None:
            return
        with self._window_lock:
            window = self._window.get(record.optimizer)
            if window is None:
                window = self._window[record.optimizer] = [0.0] * (1 + len(PHASES))
            window[0] += 1
            for index, phase in enumerate(PHASES, 1):
                window[index] += record.time.get(phase, 0.0)
        self.region.refresh()

    def _forget_least_recent(self) -> None:
        """Keep the table to the `TABLE_ROWS` optimizers that stepped last."""
        stale = min(self.latest.items(), key=lambda item: item[1].t)[0]
        del self.latest[stale]
        with self._window_lock:
            self._window.pop(stale, None)
            self._shown.pop(stale, None)

    def _phase_means(self, optimizer: int | None) -> list[float]:
        """Mean seconds per phase over the steps since the last refresh (the last shown if none)."""
        with self._window_lock:
            window = self._window.pop(optimizer, None)
            if window is not None and window[0]:
                self._shown[optimizer] = [total / window[0] for total in window[1:]]
            return self._shown.get(optimizer, [0.0] * len(PHASES))

    def render(self) -> RenderableType:
        """One row per optimizer (phase times in ms, averaged since the last refresh), then
        each optimizer's calls and the anomaly count: fits an 80-column terminal, and a
        narrower one with fewer columns (`KEPT_FIRST`)."""
        rows, calls = [], []
        for optimizer, record in sorted(list(self.latest.items()), key=lambda item: -1 if item[0] is None else item[0]):
            who = MISSING if optimizer is None else str(optimizer)
            rows.append(
                [
                    who,
                    str(record.step),
                    fmt_num(record.loss, RUN_DIGITS),
                    fmt_num(record.grad_norm, RUN_DIGITS),
                    fmt_num(record.lr[0] if record.lr else None, RUN_DIGITS),
                    *(fmt_ms(mean, unit=False) for mean in self._phase_means(optimizer)),
                ]
            )
            calls.append(f"calls ({'no optimizer' if optimizer is None else f'opt {who}'}): {' '.join(record.calls)}")
        if not calls:  # before the first step: a row of its own, so that the table need not grow for it
            rows.append([MISSING] * (len(LEADING_COLUMNS) + len(TABLE_PHASES)))
            calls.append("calls: none yet")
        table = Table(
            title=Text(TABLE_TITLE, no_wrap=True, overflow="ellipsis"),
            title_justify="left",
            box=box.SIMPLE_HEAD,
            padding=(0, 1),
            pad_edge=False,
            show_edge=False,
        )
        headers = (*LEADING_COLUMNS, *TABLE_PHASES)
        shown = columns_that_fit([list(headers), *rows], self.console.width)
        for index in shown:
            table.add_column(headers[index], justify="right", no_wrap=True)
        for row in rows:
            table.add_row(*(row[index] for index in shown))
        count = self.anomaly_count
        footer = Text(f"anomalies: {count}", style=CAUTION if count else GOOD, no_wrap=True, overflow="ellipsis")
        return Group(table, Text("\n".join(calls), no_wrap=True, overflow="ellipsis"), footer)


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

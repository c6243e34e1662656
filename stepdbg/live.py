"""What `stepdbg run` shows on stderr while the script runs, and the summary after.

On a terminal: a table kept at the bottom of the screen, redrawn at most 4
times a second (see `LiveRegion`), with the script's own output scrolling
above it unchanged. When stderr is not a terminal: one plain line every few
seconds. Anomalies are printed as they happen, in both modes.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from .schema import PHASES, Anomaly, EndRecord, StepRecord

PLAIN_INTERVAL = 5.0
SEVERITY_STYLE = {"info": "cyan", "warning": "yellow", "error": "bold red"}
REFRESH_INTERVAL = 0.25
TABLE_PHASES = ("fwd", "bwd", "step", "zero")
"""Column headers for `PHASES`, short enough for an 80-column terminal."""
TABLE_ROWS = 8
"""The table shows the optimizers stepped last, this many at most (a loop may build one
per iteration, or one per parameter)."""


class LiveRegion:
    """A block of lines at the bottom of the terminal, redrawn in place, with the
    script's output scrolling above it byte for byte.

    rich's ``Live(redirect_stdout=True)`` would hold the script's partial lines
    until a newline (a progress bar's ``\r`` updates, ``print(end="")``) and
    rewrite them, so the script's output would change. Here the script's writes
    to ``sys.stdout``/``sys.stderr`` pass straight through: the block is erased
    before each one and drawn again at the next refresh, once the cursor is back
    at the start of a line. Refreshes happen on the training thread, from
    `refresh`, so no thread of ours ever writes while the script runs.
    """

    def __init__(self, console: Console, render: Callable[[], RenderableType], clock: Callable[[], float]) -> None:
        self.console = console
        self.render = render
        self.clock = clock
        self._lock = threading.RLock()
        self._height = 0
        self._at_line_start = True
        self._last_draw = float("-inf")
        self._terminal: TextIO | None = None
        self._saved: dict[str, TextIO] = {}

    def start(self) -> None:
        self._terminal = sys.stderr
        for name in ("stdout", "stderr"):
            stream = getattr(sys, name)
            if stream.isatty():
                self._saved[name] = stream
                setattr(sys, name, _PassThrough(stream, self))

    def detach(self) -> None:
        """In a forked child: the block on the terminal is the parent's; give the streams back.
        With a lock of the child's own: a thread of the parent may have held the inherited one."""
        self._lock = threading.RLock()
        self._height = 0
        self.stop()

    def stop(self) -> None:
        with self._lock:
            self.erase()
            for name, stream in self._saved.items():
                if isinstance(getattr(sys, name), _PassThrough):
                    setattr(sys, name, stream)
            self._saved.clear()
            self._terminal = None

    def refresh(self) -> None:
        """Redraw, at most every `REFRESH_INTERVAL` seconds, and never over a partial line."""
        now = self.clock()
        if now - self._last_draw < REFRESH_INTERVAL or not self._at_line_start or self._terminal is None:
            return
        with self._lock:
            self._last_draw = now
            with self.console.capture() as capture:
                self.console.print(self.render())
            text = capture.get()
            stdout = self._saved.get("stdout")
            if stdout is not None:
                stdout.flush()  # the script's buffered output goes above the block, not below
            self._terminal.write(self._erase_sequence() + text)
            self._terminal.flush()
            self._height = text.count("\n")

    def erase(self) -> None:
        if self._height and self._terminal is not None:
            self._terminal.write(self._erase_sequence())
            self._terminal.flush()
            self._height = 0

    def _erase_sequence(self) -> str:
        """Up to the block's first line, then clear to the end of the screen."""
        return f"\x1b[{self._height}F\x1b[J" if self._height else ""

    def script_wrote(self, write: Callable[[str], int], text: str) -> int:
        with self._lock:
            self.erase()
            written = write(text)
            if text:
                self._at_line_start = text.endswith("\n")
            return written


class _PassThrough:
    """``sys.stdout``/``sys.stderr`` while the table is shown: the stream itself, with writes announced."""

    def __init__(self, stream: TextIO, region: LiveRegion) -> None:
        self._stream = stream
        self._region = region

    def write(self, text: str) -> int:
        return self._region.script_wrote(self._stream.write, text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def fmt(value: float | None, spec: str = ".4g") -> str:
    return "-" if value is None else format(value, spec)


def fmt_ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.2f} ms"


def anomaly_text(anomaly: Anomaly, prefix: str = "stepdbg:") -> Text:
    """One line per anomaly: severity, rule, where, what, and the fix."""
    where = f"step {anomaly.step}" + (f", optimizer {anomaly.optimizer}" if anomaly.optimizer is not None else "")
    text = Text(f"{prefix} ")
    text.append(f"{anomaly.severity} {anomaly.rule}", style=SEVERITY_STYLE.get(anomaly.severity, ""))
    text.append(f" ({where}): {anomaly.message}. Fix: {anomaly.hint}")
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
        self._region = LiveRegion(console, self.table, clock) if live and not quiet and console.is_terminal else None
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
            self.console.print(self._plain_line(record), highlight=False, soft_wrap=True)

    def _forget_least_recent(self) -> None:
        """Keep the table to the `TABLE_ROWS` optimizers that stepped last."""
        stale = min(self.latest.items(), key=lambda item: item[1].t)[0]
        del self.latest[stale]
        self._window.pop(stale, None)
        self._shown.pop(stale, None)

    def on_anomaly(self, anomaly: Anomaly) -> None:
        self.anomaly_count += 1
        if not self.quiet:
            self.console.print(anomaly_text(anomaly, self.prefix), highlight=False, soft_wrap=True)

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
        each optimizer's calls and the anomaly count: fits an 80-column terminal."""
        table = Table(
            title="stepdbg · phase times in ms, mean since the last refresh",
            title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False, show_edge=False,
        )
        for column in ("opt", "step", "loss", "grad norm", "lr", *TABLE_PHASES):
            table.add_column(column, justify="right", no_wrap=True)
        calls = []
        for optimizer, record in sorted(list(self.latest.items()), key=lambda item: -1 if item[0] is None else item[0]):
            who = "-" if optimizer is None else str(optimizer)
            table.add_row(
                who,
                str(record.step),
                fmt(record.loss),
                fmt(record.grad_norm),
                fmt(record.lr[0]) if record.lr else "-",
                *(fmt(mean * 1e3, ".2f") for mean in self._phase_means(optimizer)),
            )
            calls.append(f"calls ({'no optimizer' if optimizer is None else f'opt {who}'}): {' '.join(record.calls)}")
        footer = Text(f"anomalies: {self.anomaly_count}", style="yellow" if self.anomaly_count else "green")
        return Group(table, Text("\n".join(calls), no_wrap=True, overflow="ellipsis"), footer)

    def summary(self, end: EndRecord, trace: str, ranks: Mapping[int, tuple[str, EndRecord | None]] | None = None) -> None:
        """A few lines after the run: steps, where the time went, anomalies, the trace;
        then a line for each rank started with torch.multiprocessing (`children`)."""
        if self.quiet:
            return
        print_line = self.console.print
        if end.steps:
            total = sum(end.time.get(phase, 0.0) for phase in (*PHASES, "overhead")) or 1.0
            shares = " · ".join(
                f"{phase} {end.time.get(phase, 0.0) / total:.0%}" for phase in (*PHASES, "overhead") if phase in end.time
            ).replace("overhead", "stepdbg")
            print_line(f"stepdbg: {end.steps} steps in {end.duration:.2f} s ({shares})", highlight=False, soft_wrap=True)
        else:
            print_line(
                f"stepdbg: no optimizer step or backward pass in this process ({end.duration:.2f} s)",
                highlight=False, soft_wrap=True,
            )
        if end.anomalies:
            print_line(Text(f"stepdbg: anomalies: {_counts(end.anomalies)}", style="yellow"), soft_wrap=True)
        elif end.steps:
            print_line(Text("stepdbg: no anomalies", style="green"), soft_wrap=True)
        print_line(f"stepdbg: trace written to {trace}", highlight=False, soft_wrap=True)
        for rank, (rank_trace, rank_end) in (ranks or {}).items():
            if rank_end is None:
                said = "no end record (killed, or still running)"
            else:
                status = "" if rank_end.status == "ok" else f" ({rank_end.status}, exit {rank_end.exit_code})"
                said = f"{rank_end.steps} steps{status}, " + (
                    f"anomalies: {_counts(rank_end.anomalies)}" if rank_end.anomalies else "no anomalies"
                )
            print_line(f"stepdbg: rank {rank}: {said}, trace {rank_trace}", highlight=False, soft_wrap=True)


def _counts(anomalies: Mapping[str, int]) -> str:
    return ", ".join(f"{rule} ×{count}" for rule, count in anomalies.items())

"""What `stepdbg run` shows on stderr while the script runs, and the summary after.

On a terminal: a rich live table, refreshed at most 4 times a second. The
script's own prints must never be swallowed by it, so stdout/stderr are routed
through rich only when they are that same terminal; when stdout goes to a
file it is left alone. When stderr is not a terminal: one plain line every few
seconds. Anomalies are printed as they happen, in both modes.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .schema import PHASES, Anomaly, EndRecord, StepRecord

PLAIN_INTERVAL = 5.0
SEVERITY_STYLE = {"info": "cyan", "warning": "yellow", "error": "bold red"}


def fmt(value: float | None, spec: str = ".4g") -> str:
    return "-" if value is None else format(value, spec)


def fmt_ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.2f} ms"


def anomaly_text(anomaly: Anomaly) -> Text:
    """One line per anomaly: severity, rule, where, what, and the fix."""
    where = f"step {anomaly.step}" + (f", optimizer {anomaly.optimizer}" if anomaly.optimizer is not None else "")
    text = Text("stepdbg: ")
    text.append(f"{anomaly.severity} {anomaly.rule}", style=SEVERITY_STYLE.get(anomaly.severity, ""))
    text.append(f" ({where}): {anomaly.message}. Fix: {anomaly.hint}")
    return text


class View:
    """The terminal side of a run: live table or plain lines, anomalies, summary."""

    def __init__(self, console: Console, live: bool, quiet: bool, clock: Callable[[], float] = time.monotonic) -> None:
        self.console = console
        self.quiet = quiet
        self.clock = clock
        self.latest: dict[int | None, StepRecord] = {}
        self._window: dict[int | None, list[float]] = {}
        """Per optimizer: [steps, then seconds per phase] since the last refresh."""
        self._shown: dict[int | None, list[float]] = {}
        self.anomaly_count = 0
        self._live: Live | None = None
        self._use_live = live and not quiet and console.is_terminal
        self._last_plain = clock()

    def start(self) -> None:
        if not self._use_live:
            return
        same_terminal = sys.stdout.isatty() and sys.stderr.isatty()
        self._live = Live(
            self,
            console=self.console,
            refresh_per_second=4,
            transient=True,
            redirect_stdout=same_terminal,
            redirect_stderr=same_terminal,
        )
        self._live.start()

    def stop(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def on_step(self, record: StepRecord) -> None:
        self.latest[record.optimizer] = record
        if self._use_live:
            window = self._window.get(record.optimizer)
            if window is None:
                window = self._window[record.optimizer] = [0.0] * (1 + len(PHASES))
            window[0] += 1
            for index, phase in enumerate(PHASES, 1):
                window[index] += record.time.get(phase, 0.0)
            return
        if self.quiet:
            return
        now = self.clock()
        if now - self._last_plain >= PLAIN_INTERVAL:
            self._last_plain = now
            self.console.print(self._plain_line(record), highlight=False, soft_wrap=True)

    def on_anomaly(self, anomaly: Anomaly) -> None:
        self.anomaly_count += 1
        if not self.quiet:
            self.console.print(anomaly_text(anomaly), highlight=False, soft_wrap=True)

    @staticmethod
    def _plain_line(record: StepRecord) -> str:
        who = f"optimizer {record.optimizer}" if record.optimizer is not None else "no optimizer"
        lr = fmt(record.lr[0]) if record.lr else "-"
        return (
            f"stepdbg: {who} step {record.step}: loss {fmt(record.loss)}, grad norm {fmt(record.grad_norm)}, "
            f"lr {lr}, {fmt_ms(record.time.get('total'))}/step"
        )

    def _phase_means(self, optimizer: int | None) -> list[float]:
        """Mean seconds per phase over the steps since the last refresh (the last shown if none)."""
        window = self._window.pop(optimizer, None)
        if window is not None and window[0]:
            self._shown[optimizer] = [total / window[0] for total in window[1:]]
        return self._shown.get(optimizer, [0.0] * len(PHASES))

    def __rich__(self) -> RenderableType:
        table = Table(title="stepdbg (phase times: mean since the last refresh)", title_justify="left", expand=False)
        for column in ("opt", "step", "loss", "grad norm", "lr", *PHASES, "calls"):
            table.add_column(column, justify="left" if column == "calls" else "right")
        for optimizer, record in sorted(list(self.latest.items()), key=lambda item: -1 if item[0] is None else item[0]):
            table.add_row(
                "-" if optimizer is None else str(optimizer),
                str(record.step),
                fmt(record.loss),
                fmt(record.grad_norm),
                fmt(record.lr[0]) if record.lr else "-",
                *(fmt_ms(mean) for mean in self._phase_means(optimizer)),
                " ".join(record.calls),
            )
        footer = Text(f"anomalies: {self.anomaly_count}", style="yellow" if self.anomaly_count else "green")
        return Group(table, footer)

    def summary(self, end: EndRecord, trace: str) -> None:
        """A few lines after the run: steps, where the time went, anomalies, the trace."""
        if self.quiet:
            return
        print_line = self.console.print
        total = sum(end.time.get(phase, 0.0) for phase in (*PHASES, "overhead")) or 1.0
        shares = " · ".join(
            f"{phase} {end.time.get(phase, 0.0) / total:.0%}" for phase in (*PHASES, "overhead") if phase in end.time
        ).replace("overhead", "stepdbg")
        print_line(f"stepdbg: {end.steps} steps in {end.duration:.2f} s ({shares})", highlight=False, soft_wrap=True)
        if end.anomalies:
            found = ", ".join(f"{rule} ×{count}" for rule, count in end.anomalies.items())
            print_line(Text(f"stepdbg: anomalies: {found}", style="yellow"), soft_wrap=True)
        elif end.steps:
            print_line(Text("stepdbg: no anomalies", style="green"), soft_wrap=True)
        print_line(f"stepdbg: trace written to {trace}", highlight=False, soft_wrap=True)

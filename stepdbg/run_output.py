"""What a traced run prints on stderr while it runs and after: `RunOutput`.

The live table where it can be redrawn (`live`), progress lines elsewhere
(`progress`), each anomaly as a line as it is found, in every mode, and the
end-of-run report (`end_report`), with why ``--strict`` fails the run. Every line
goes out whole, as it is: never read as rich markup.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

from rich.console import Console
from rich.text import Text

from .end_report import end_report, strict_line
from .live import LiveTable
from .progress import ProgressLines
from .schema import Anomaly, EndRecord, StepRecord
from .style import severity_style


def anomaly_line(anomaly: Anomaly, prefix: str = "stepdbg:") -> Text:
    """One line per anomaly: severity, rule, where, what, and the fix (for information, a note)."""
    where = f"step {anomaly.step}" + (f", optimizer {anomaly.optimizer}" if anomaly.optimizer is not None else "")
    text = Text(f"{prefix} ")
    text.append(f"{anomaly.severity} {anomaly.rule}", style=severity_style(anomaly.severity))
    lead = "Note" if anomaly.severity == "info" else "Fix"
    text.append(f" ({where}): {anomaly.message}. {lead}: {anomaly.hint}")
    return text


class RunOutput:
    """The terminal side of one traced process: its live table or progress lines, its
    anomalies, its end-of-run report. ``quiet``: nothing but errors; ``label``: which rank
    the lines come from (``stepdbg[rank 1]:``)."""

    def __init__(
        self, console: Console, live: bool, quiet: bool, clock: Callable[[], float] = time.monotonic, label: str = ""
    ) -> None:
        self.console = console
        self.quiet = quiet
        self.prefix = f"stepdbg[{label}]:" if label else "stepdbg:"
        """Begins each line: a rank started by torch.multiprocessing says which it is."""
        self.table = LiveTable(console, clock, redraw=live and not quiet)
        self.progress = ProgressLines(self.prefix, clock)

    def start(self) -> None:
        self.table.start()

    def stop(self) -> None:
        self.table.stop()

    def detach(self) -> None:
        """In a forked child: the terminal is the parent's run's; draw and print nothing more."""
        self.table.detach()
        self.quiet = True

    def on_step(self, record: StepRecord) -> None:
        self.table.add(record)
        if self.table.region is None and not self.quiet:
            line = self.progress.line(record)
            if line is not None:
                self._line(line)

    def note(self, text: str) -> None:
        """A line about the run itself (where its trace goes), unless quiet."""
        if not self.quiet:
            self._line(f"{self.prefix} {text}")

    def on_anomaly(self, anomaly: Anomaly) -> None:
        self.table.anomaly_count += 1
        if not self.quiet:
            self._line(anomaly_line(anomaly, self.prefix))

    def report_end(
        self,
        end: EndRecord,
        trace: str,
        ranks: Mapping[int, tuple[str, EndRecord | None]] | None = None,
        stopped: str | None = None,
    ) -> None:
        """The end-of-run report (`end_report.end_report`), unless quiet."""
        if not self.quiet:
            for line in end_report(end, trace, self.prefix, ranks, stopped):
                self._line(line)

    def report_strict_failure(self, problems: Sequence[tuple[str, str]]) -> None:
        """The line that says why ``--strict`` fails the run (`end_report.strict_line`): printed
        even when quiet (in CI, a red build needs its reason)."""
        self._line(strict_line(problems, self.prefix))

    def _line(self, line: str | Text) -> None:
        """One line as it is: never read as rich markup or emoji codes (a rank label, a path with
        brackets or colons). On a terminal, wrapped at word boundaries to its width, for a
        reader; to a pipe or a file, whole, one message a line: grep and CI log viewers (which
        wrap lines themselves) find each message on one line, whatever the width it was run at."""
        self.console.print(line, markup=False, emoji=False, highlight=False, soft_wrap=not self.console.is_terminal)

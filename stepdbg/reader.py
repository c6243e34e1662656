"""`stepdbg.load`: a trace read back from Python, for analysis code and notebooks.

A thin typed layer over the streaming reader (`trace.Trace`): step records are
streamed, never all held; the optimizers, anomalies and end record come from one
pass over the file, made when first asked for. Imports neither torch nor pandas
(`to_pandas` imports pandas when called).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .renderers.show_csv import STEP_COLUMNS, step_rows
from .schema import Anomaly, EndRecord, Header, OptimizerInfo, StepRecord
from .tracefile import Record, Trace
from .view import StepFilter, TraceView

if TYPE_CHECKING:
    import pandas


@dataclass
class _Scan:
    """What one pass over a trace finds besides its steps."""

    optimizers: dict[int, OptimizerInfo] = field(default_factory=dict)
    anomalies: list[Anomaly] = field(default_factory=list)
    end: EndRecord | None = None
    truncated: bool = False


class TraceReader:
    """A trace opened for reading: the header at once, the rest as it is asked for.

    The file is read as it is when each question is first asked: a trace still being
    written is read again by a new `load`. A file that is not a trace, or a corrupt
    line, raises `stepdbg.TraceError` naming ``FILE:LINE``.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._trace = Trace(Path(path))
        self._scan: _Scan | None = None

    @property
    def path(self) -> Path:
        return self._trace.path

    @property
    def header(self) -> Header:
        """What ran, where, with which versions."""
        return self._trace.header

    def __iter__(self) -> Iterator[Record]:
        """Every record after the header, in file order, streamed."""
        return iter(self._trace)

    def steps(self) -> Iterator[StepRecord]:
        """The step records, in file order, streamed (NaN and infinities as they were)."""
        return (record for record in self._trace if isinstance(record, StepRecord))

    @property
    def optimizers(self) -> dict[int, OptimizerInfo]:
        """Each optimizer by index, as last described (groups added while training included)."""
        return self._scanned().optimizers

    @property
    def anomalies(self) -> list[Anomaly]:
        """Each problem found, as first reported, in order (the end record counts the repeats)."""
        return self._scanned().anomalies

    @property
    def end(self) -> EndRecord | None:
        """How the run ended and its totals; None for a run killed, or still running."""
        return self._scanned().end

    @property
    def truncated(self) -> bool:
        """Whether the last line was cut mid-way (a killed run); every whole line before it is read."""
        return self._scanned().truncated

    def _scanned(self) -> _Scan:
        if self._scan is None:
            scan = _Scan()
            for record in self._trace:
                if isinstance(record, OptimizerInfo):
                    scan.optimizers[record.optimizer] = record
                elif isinstance(record, Anomaly):
                    scan.anomalies.append(record)
            scan.end, scan.truncated = self._trace.end, self._trace.truncated
            self._scan = scan
        return self._scan

    def to_pandas(self) -> pandas.DataFrame:
        """One row per step record, the table of ``stepdbg show --format csv`` (by its renderer,
        on the same view; see docs/api.md); NaN and infinities as they were, a missing value
        as NaN or None."""
        try:
            import pandas
        except ImportError:
            raise ImportError("stepdbg: to_pandas() needs pandas (pip install pandas)") from None
        rows = step_rows(TraceView(self._trace, StepFilter()))
        return pandas.DataFrame.from_records(rows, columns=STEP_COLUMNS)


def load(path: str | os.PathLike[str]) -> TraceReader:
    """Open a trace written by ``stepdbg run`` or ``stepdbg.trace()``."""
    return TraceReader(path)

"""Writing and reading traces: JSON Lines, one record (see `schema`) a line.

The writer is built to lose nothing: lines go to a binary buffered file that a
daemon thread flushes twice a second, so a killed run leaves every line written
more than a second before, each whole. The reader streams, keeps every whole
line of a trace cut mid-line, and names ``FILE:LINE`` for a corrupt one.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from .schema import (
    SCHEMA_VERSION,
    Anomaly,
    EndRecord,
    Header,
    OptimizerInfo,
    StepRecord,
    sanitize_nonfinite,
)

FLUSH_INTERVAL = 0.5

Record = Header | OptimizerInfo | StepRecord | Anomaly | EndRecord


class TraceError(Exception):
    """A trace that cannot be read: the message is the one line the user sees."""


def dumps(data: dict[str, Any]) -> str:
    """Compact standard JSON; NaN/Inf become null plus a ``nonfinite`` entry."""
    try:
        return json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except ValueError:
        return json.dumps(sanitize_nonfinite(data), ensure_ascii=False, separators=(",", ":"))


class TraceWriter:
    """Appends records to a trace file and flushes them in the background."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[bytes] = open(path, "wb")  # noqa: SIM115 - closed in close()
        self._closed = threading.Event()
        self._flusher = threading.Thread(target=self._flush_periodically, name="stepdbg-flush", daemon=True)
        self._flusher.start()

    def write(self, data: dict[str, Any]) -> None:
        self._file.write((dumps(data) + "\n").encode())

    def _flush_periodically(self) -> None:
        while not self._closed.wait(FLUSH_INTERVAL):
            try:
                self._file.flush()
            except ValueError:  # closed under us
                return

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        self._flusher.join()
        self._file.close()


_RECORD_TYPES: dict[str, Any] = {
    "optimizer": OptimizerInfo,
    "step": StepRecord,
    "anomaly": Anomaly,
    "end": EndRecord,
}


class Trace:
    """A trace opened for streaming: the header is read at once, the rest on demand.

    ``truncated`` becomes true once iteration meets a last line cut mid-way (a
    killed run); ``end`` holds the end record, if the run wrote one.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.truncated = False
        self.end: EndRecord | None = None
        if not self.path.exists():
            raise TraceError(f"{self.path}: no such file")
        if self.path.is_dir():
            raise TraceError(f"{self.path}: is a directory, not a trace")
        with self._open() as f:
            first = f.readline()
        self.header = self._parse_header(first)

    def _open(self) -> IO[str]:
        try:
            return open(self.path, encoding="utf-8", errors="strict")
        except OSError as e:
            raise TraceError(f"{self.path}: cannot read ({e.strerror})") from None

    def _where(self, line_number: int) -> str:
        return f"{self.path}:{line_number}"

    def _parse_header(self, line: str) -> Header:
        if not line.strip():
            raise TraceError(f"{self.path}: empty file, not a stepdbg trace")
        try:
            data = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise TraceError(f"{self._where(1)}: not a stepdbg trace (the first line is not JSON)") from None
        if not isinstance(data, dict) or data.get("type") != "header":
            raise TraceError(f"{self._where(1)}: not a stepdbg trace (no header record)")
        schema = data.get("schema")
        if not isinstance(schema, int):
            raise TraceError(f"{self._where(1)}: not a stepdbg trace (header has no schema version)")
        if schema > SCHEMA_VERSION:
            raise TraceError(
                f"{self.path}: trace schema {schema} is newer than this stepdbg reads "
                f"({SCHEMA_VERSION}); upgrade stepdbg"
            )
        return Header.from_json(data)

    def __iter__(self) -> Iterator[Record]:
        """Yield every record after the header, in file order."""
        with self._open() as f:
            try:
                lines = iter(f)
                next(lines, None)
                line_number = 1
                for line in lines:
                    line_number += 1
                    record = self._parse_line(line, line_number)
                    if record is not None:
                        yield record
            except UnicodeDecodeError:
                raise TraceError(f"{self._where(line_number + 1)}: not UTF-8 text") from None

    def _parse_line(self, line: str, line_number: int) -> Record | None:
        if not line.strip():
            return None
        try:
            data = json.loads(line)
        except json.JSONDecodeError as e:
            if not line.endswith("\n"):
                self.truncated = True  # the last line of a killed run
                return None
            raise TraceError(f"{self._where(line_number)}: corrupt line ({e.msg})") from None
        if not isinstance(data, dict):
            raise TraceError(f"{self._where(line_number)}: corrupt line (not a JSON object)")
        record_type = _RECORD_TYPES.get(data.get("type", ""))
        if record_type is None:
            return None  # a record type from a newer stepdbg: ignore it
        try:
            record = record_type.from_json(data)
        except (KeyError, TypeError, ValueError) as e:
            raise TraceError(f"{self._where(line_number)}: corrupt {data.get('type')} record ({e})") from None
        if isinstance(record, EndRecord):
            self.end = record
        return record

    @property
    def finished(self) -> bool:
        """Whether the run wrote its end record (valid once iteration is done)."""
        return self.end is not None

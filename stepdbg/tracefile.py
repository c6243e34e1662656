"""The trace file: written and read as JSON Lines, one record (see `schema`) a line.

The writer is built to lose nothing and to cost the training loop almost
nothing: records are queued, and a daemon thread encodes, writes and flushes
them twice a second, so a killed run leaves every record queued more than a
second before, each line whole. The reader streams, keeps every whole
line of a trace cut mid-line, and names ``FILE:LINE`` for a corrupt one.
"""

from __future__ import annotations

import json
import math
import sys
import threading
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from .ownership import claim
from .schema import (
    SCHEMA_VERSION,
    Anomaly,
    AnomalySteps,
    EndRecord,
    Header,
    OptimizerInfo,
    StepRecord,
    sanitize_nonfinite,
)

FLUSH_INTERVAL = 0.5
MAX_QUEUED = 4096
"""Records queued before the training thread writes them itself (bounds memory on very fast loops)."""

Record = Header | OptimizerInfo | StepRecord | Anomaly | AnomalySteps | EndRecord


class TraceError(Exception):
    """A trace that cannot be read: the message is the one line the user sees."""


def dumps(data: dict[str, Any]) -> str:
    """Compact standard JSON; NaN/Inf become null plus a ``nonfinite`` entry."""
    try:
        return json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except ValueError:
        return json.dumps(sanitize_nonfinite(data), ensure_ascii=False, separators=(",", ":"))


def encode_line(data: dict[str, Any]) -> bytes:
    """One record as a trace line, newline included."""
    return (dumps(data) + "\n").encode()


def encode_step(record: StepRecord) -> bytes:
    """One step record as a trace line, the same as ``encode_line(record.to_json())``.

    Step records are nearly all of a trace, so they go through orjson (a fifth
    of ``json.dumps``'s time, on the flush thread but under the GIL that a one-thread
    training loop needs too). orjson would write NaN and Inf as a bare null: records
    with a non-finite number take the general path that flags them.
    """
    data = record.to_json()
    if not _all_finite(record):
        return encode_line(data)
    return orjson.dumps(data, option=orjson.OPT_APPEND_NEWLINE)


def _all_finite(record: StepRecord) -> bool:
    """Whether each number that may be NaN or Inf is finite, in one sum: a sum is finite unless
    a term is not, or finite terms overflow (a record then takes the general path for nothing)."""
    values = [record.loss, record.grad_norm, *record.group_grad_norms, *record.lr]
    if record.param_grad_norms is not None:  # a detail step
        values += record.param_grad_norms.values()
        values.append(record.update_ratio)
        values += (record.param_update_ratios or {}).values()
    return math.isfinite(sum([value for value in values if value is not None]))


class TraceWriter:
    """Appends records to a trace file; a daemon thread encodes, writes and flushes them.

    The training thread only queues a record (a deque append): encoding and
    writing happen on the flush thread twice a second, many lines at once, out
    of the training loop. Both threads may drain the queue (the training thread
    when it grows long, or at the end); a lock keeps the lines in order. The file
    is unbuffered (each drain is one write): a forked child holds no copy of
    unwritten bytes that its exit could write again. The file is this process's alone
    while it is open (`ownership.claim`: TraceInUse where a live run holds it).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[bytes] = claim(path)
        self._detached = False
        self._queue: deque[StepRecord | dict[str, Any]] = deque()
        self._draining = threading.Lock()
        self._closed = threading.Event()
        self._flusher = threading.Thread(target=self._flush_periodically, name="stepdbg-flush", daemon=True)
        self._flusher.start()

    def write(self, data: dict[str, Any]) -> None:
        self._queue.append(data)

    def write_step(self, record: StepRecord) -> None:
        """Queue a step record; it must not change after this call."""
        self._queue.append(record)
        if len(self._queue) >= MAX_QUEUED:
            self._drain()

    def _drain(self) -> None:
        if self._detached:
            self._queue.clear()
            return
        with self._draining:
            queue, items = self._queue, []
            while queue:
                items.append(queue.popleft())
            try:
                lines = [encode_step(item) if isinstance(item, StepRecord) else encode_line(item) for item in items]
            except BaseException:  # Ctrl-C on the training thread: the records wait for the next drain
                queue.extendleft(reversed(items))
                raise
            if lines:
                data = memoryview(b"".join(lines))
                while data:
                    data = data[self._file.write(data) or 0 :]

    def flush(self) -> None:
        """Write everything queued now, on this thread (the header: the file says at once whose it is)."""
        self._drain()

    def _flush_periodically(self) -> None:
        while not self._closed.wait(FLUSH_INTERVAL):
            try:
                self._drain()
            except Exception:
                return

    def detach(self) -> None:
        """In a forked child: the file is the parent's. Never write to it again (the child's
        records would mix with the parent's steps), nor take a lock (the lock, or the
        event's, may have been held by the parent's flush thread at the fork). Its copy of
        the file is closed, so that a child outliving its parent holds no lock on the trace."""
        self._detached = True
        self._queue.clear()
        self._file.close()

    def close(self) -> None:
        """Write everything still queued; a trace that cannot be written is said in one line."""
        if self._detached or self._closed.is_set():
            return
        self._closed.set()
        self._flusher.join()
        try:
            self._drain()
            self._file.close()
        except Exception as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else f"{type(e).__name__}: {e}"
            print(f"stepdbg: cannot write the trace {self.path}: {reason}", file=sys.stderr)


_RECORD_TYPES: dict[str, Any] = {
    "optimizer": OptimizerInfo,
    "step": StepRecord,
    "anomaly": Anomaly,
    "anomaly_steps": AnomalySteps,
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

    def _open(self) -> IO[bytes]:
        """The trace as bytes: lines are parsed as they are, UTF-8 checked by orjson."""
        try:
            return open(self.path, "rb")
        except OSError as e:
            raise TraceError(f"{self.path}: cannot read ({e.strerror})") from None

    def _where(self, line_number: int) -> str:
        return f"{self.path}:{line_number}"

    def _parse_header(self, line: bytes) -> Header:
        if not line.strip():
            raise TraceError(f"{self.path}: empty file, not a stepdbg trace")
        try:
            data = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise TraceError(f"{self._where(1)}: not a stepdbg trace (the first line is not JSON)") from None
        if not isinstance(data, dict) or data.get("type") != "header":
            raise TraceError(f"{self._where(1)}: not a stepdbg trace (no header record)")
        schema = data.get("schema")
        if type(schema) is not int or schema < 1:
            raise TraceError(f"{self._where(1)}: not a stepdbg trace (header has no schema version)")
        if schema > SCHEMA_VERSION:
            raise TraceError(
                f"{self.path}: trace schema {schema} is newer than this stepdbg reads "
                f"({SCHEMA_VERSION}); upgrade stepdbg"
            )
        try:
            return Header.from_json(data)
        except (TypeError, ValueError) as e:
            raise TraceError(f"{self._where(1)}: corrupt header ({e})") from None

    def __iter__(self) -> Iterator[Record]:
        """Yield every record after the header, in file order.

        Lines are parsed as bytes by orjson (which checks the UTF-8 itself):
        decoding is most of a long trace's reading time, and orjson does it about
        four times faster than the json module. A last line cut anywhere, even
        inside a multi-byte character, is a cut line like any other.
        """
        with self._open() as f:
            f.readline()
            for line_number, raw in enumerate(f, start=2):
                record = self._parse_line(raw, line_number)
                if record is not None:
                    yield record

    def _parse_line(self, raw: bytes, line_number: int) -> Record | None:
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            if not raw.endswith(b"\n"):
                self.truncated = True  # the last line of a killed run
                return None
            if not raw.strip():
                return None
            raise TraceError(f"{self._where(line_number)}: corrupt line ({e.msg})") from None
        if not isinstance(data, dict):
            raise TraceError(f"{self._where(line_number)}: corrupt line (not a JSON object)")
        kind = data.get("type", "")
        record_type = _RECORD_TYPES.get(kind) if type(kind) is str else None
        if record_type is None:
            return None  # a record type from a newer stepdbg: ignore it
        try:
            record = record_type.from_json(data)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise TraceError(f"{self._where(line_number)}: corrupt {data.get('type')} record ({e})") from None
        if isinstance(record, EndRecord):
            self.end = record
        return record

    @property
    def finished(self) -> bool:
        """Whether the run wrote its end record (valid once iteration is done)."""
        return self.end is not None


END_TAIL_BYTES = 1 << 16
"""An end record fits in this many bytes at the end of a trace."""


def read_end(path: Path) -> EndRecord | None:
    """A trace's end record, from its last line, without reading the rest; None where
    there is none (a process killed, or still running) or the file cannot be read."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            f.seek(max(0, size - END_TAIL_BYTES))
            tail = f.read()
    except OSError:
        return None
    if not tail.endswith(b"\n"):
        return None
    try:
        data = orjson.loads(tail.rstrip(b"\n").rsplit(b"\n", 1)[-1])
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict) or data.get("type") != "end":
        return None
    try:
        return EndRecord.from_json(data)
    except (TypeError, ValueError):
        return None

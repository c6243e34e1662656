"""Writing and reading traces: JSON Lines, one record (see `schema`) a line.

The writer is built to lose nothing: lines go to a binary buffered file that a
daemon thread flushes twice a second, so a killed run leaves every line written
more than a second before, each whole. The reader streams, keeps every whole
line of a trace cut mid-line, and names ``FILE:LINE`` for a corrupt one.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import orjson

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


_CALLS_JSON: dict[tuple[str, ...], str] = {}
_TIME_TEMPLATES: dict[tuple[str, ...], str] = {}
"""Per set of phases, a %-template for the ``time`` object: one formatting call per record."""


def _number(value: float | None, spec: str = ".9g") -> str:
    return "null" if value is None else format(value, spec)


def _numbers(values: list[float | None]) -> str:
    return ",".join("null" if v is None else format(v, ".9g") for v in values)


def encode_step(record: StepRecord) -> str:
    """One step record as a JSON line, the same as ``dumps(record.to_json())``.

    Step records are nearly all of a trace and are written inside the training
    loop: formatting them directly costs a third of ``json.dumps``. Nine
    significant digits hold every float32 exactly; records with a non-finite
    number or per-parameter detail take the general path.
    """
    if record.param_grad_norms is not None or not _all_finite(record):
        return dumps(record.to_json())
    calls = _CALLS_JSON.get(key := tuple(record.calls))
    if calls is None:
        calls = _CALLS_JSON[key] = json.dumps(record.calls, ensure_ascii=False)
    time = record.time
    template = _TIME_TEMPLATES.get(key := tuple(time))
    if template is None:
        template = _TIME_TEMPLATES[key] = ",".join(f'"{phase}":%.6g' for phase in key)
    times = template % tuple(time.values())
    return (
        f'{{"type":"step","optimizer":{"null" if record.optimizer is None else record.optimizer},'
        f'"step":{record.step},"t":{record.t:.9g},"calls":{calls},"backward_calls":{record.backward_calls},'
        f'"skipped":{"true" if record.skipped else "false"},"loss":{_number(record.loss)},'
        f'"grad_norm":{_number(record.grad_norm)},"group_grad_norms":[{_numbers(record.group_grad_norms)}],'
        f'"lr":[{_numbers(record.lr)}],"time":{{{times}}}}}'
    )


def _all_finite(record: StepRecord) -> bool:
    isfinite = math.isfinite
    return (
        (record.loss is None or isfinite(record.loss))
        and (record.grad_norm is None or isfinite(record.grad_norm))
        and all(v is None or isfinite(v) for v in record.group_grad_norms)
        and all(v is None or isfinite(v) for v in record.lr)
    )


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

    def write_step(self, record: StepRecord) -> None:
        self._file.write((encode_step(record) + "\n").encode())

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
        if not isinstance(schema, int):
            raise TraceError(f"{self._where(1)}: not a stepdbg trace (header has no schema version)")
        if schema > SCHEMA_VERSION:
            raise TraceError(
                f"{self.path}: trace schema {schema} is newer than this stepdbg reads "
                f"({SCHEMA_VERSION}); upgrade stepdbg"
            )
        return Header.from_json(data)

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
        record_type = _RECORD_TYPES.get(data.get("type", ""))
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

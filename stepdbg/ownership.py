"""A run owns its trace file: never two writers on one file.

Two runs of one script in one folder (a sweep started with ``&``) would both write
``train.stepdbg.jsonl``: the second empties the file under the first, and their
lines interleave into a trace neither can read back. A writer takes an advisory
lock (``flock``) on the file before emptying it, and holds it for the run's life.
The kernel releases it when the process ends, however it ends, so a crashed or
killed run holds no name. A process forked during the run shares the lock until it
closes its copy of the file (`TraceWriter.detach`); processes started with ``exec``
do not inherit the file.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import IO

import orjson

try:
    import fcntl
except ImportError:  # Windows has no flock: traces are not guarded there
    fcntl = None  # type: ignore[assignment]

TRACE_SUFFIX = ".stepdbg.jsonl"
HEADER_BYTES = 1 << 16
"""A trace's header fits in this many bytes."""


class TraceInUse(Exception):
    """A live process holds the trace file: the message says which, when its header does."""

    def __init__(self, path: Path) -> None:
        self.path = path
        pid = _writer_pid(path)
        self.holder = f"another run (pid {pid})" if pid is not None else "another run"
        super().__init__(f"{self.holder} is writing it")


def claim(path: Path) -> IO[bytes]:
    """``path`` opened for writing, emptied, and held by this process until it closes it;
    TraceInUse where a live process holds it. A device or a pipe (``-o /dev/null``) is
    neither locked nor emptied."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o666)  # not O_TRUNC: the file may be another run's
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            _lock(fd, path)
            os.ftruncate(fd, 0)
        return open(fd, "wb", buffering=0)
    except BaseException:
        os.close(fd)
        raise


def _lock(fd: int, path: Path) -> None:
    if fcntl is None:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise TraceInUse(path) from None
        # ENOLCK, EOPNOTSUPP: a filesystem without locks (some network mounts); the run goes on unguarded


def _writer_pid(path: Path) -> int | None:
    """The pid in the header of the trace another run is writing, if it has been written yet."""
    try:
        with open(path, "rb") as f:
            header = orjson.loads(f.readline(HEADER_BYTES))
    except (OSError, orjson.JSONDecodeError):
        return None
    pid = header.get("pid") if isinstance(header, dict) else None
    return pid if type(pid) is int else None


def tagged_trace_path(trace: Path, tag: str) -> Path:
    """``tag`` before the trace's suffix: ``train.stepdbg.jsonl`` -> ``train.TAG.stepdbg.jsonl``,
    ``t.jsonl`` -> ``t.TAG.jsonl``: still matched by ``*.stepdbg.jsonl`` and a .gitignore of it."""
    name = trace.name
    suffix = TRACE_SUFFIX if name.endswith(TRACE_SUFFIX) else trace.suffix
    return trace.with_name(f"{name[: len(name) - len(suffix)]}.{tag}{suffix}")

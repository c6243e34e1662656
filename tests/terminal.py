"""A pseudo-terminal, its size, and what a terminal shows, for the live table tests."""

from __future__ import annotations

import os
import threading
from typing import Any


class PseudoTerminal:
    """A pseudo-terminal of a given size: ``file`` is what a script's stderr would be, and
    ``received`` grows, on a thread of its own, with every byte written to it."""

    def __init__(self, rows: int, columns: int) -> None:
        self.master, slave = os.openpty()
        set_size(slave, rows, columns)
        self.slave = slave
        self.file = os.fdopen(slave, "w", buffering=1, encoding="utf-8")
        self.received = bytearray()  # grown by the reader thread alone
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                return
            if not chunk:
                return
            self.received.extend(chunk)

    def close(self) -> None:
        self.file.close()
        os.close(self.master)


def set_size(fd: int, rows: int, columns: int) -> None:
    """Give the pseudo-terminal at ``fd`` a size, as a terminal window does (and a resize)."""
    import fcntl
    import struct
    import termios

    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))


def shown_lines(screen: Any) -> list[str]:
    """A pyte ``HistoryScreen``'s lines, those scrolled off the top first, without trailing blank lines."""
    columns = screen.columns
    scrolled = ["".join(line[x].data for x in range(columns)) for line in screen.history.top]
    lines = [line.rstrip() for line in scrolled + screen.display]
    while lines and not lines[-1]:
        lines.pop()
    return lines

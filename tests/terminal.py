"""A pseudo-terminal's size, and what a terminal shows, for the live table tests."""

from __future__ import annotations

from typing import Any


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

"""Where a renderer writes: text for a person on a rich console, data for a program on a stream."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TextIO

from rich.console import Console


@dataclass
class Output:
    """Both default to stdout, looked up when written to (a test, or the CLI runner, may swap it)."""

    console: Console | None = None
    stream: TextIO | None = None

    @property
    def text(self) -> Console:
        return self.console if self.console is not None else Console()

    @property
    def data(self) -> TextIO:
        return self.stream if self.stream is not None else sys.stdout

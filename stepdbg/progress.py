"""The progress lines a run prints where no live table can be drawn (stderr a pipe, a file, a
dumb terminal): one every `PLAIN_INTERVAL` seconds, of the step that reached it."""

from __future__ import annotations

from collections.abc import Callable

from .schema import StepRecord
from .style import RUN_DIGITS, fmt_ms, fmt_num

PLAIN_INTERVAL = 5.0


class ProgressLines:
    """Says when a step is due a line, and what the line says."""

    def __init__(self, prefix: str, clock: Callable[[], float]) -> None:
        self.prefix = prefix
        self.clock = clock
        self._last = clock()

    def line(self, record: StepRecord) -> str | None:
        """The line for ``record`` if `PLAIN_INTERVAL` seconds have passed since the last one, else None."""
        now = self.clock()
        if now - self._last < PLAIN_INTERVAL:
            return None
        self._last = now
        who = f"optimizer {record.optimizer}" if record.optimizer is not None else "no optimizer"
        lr = fmt_num(record.lr[0] if record.lr else None, RUN_DIGITS)
        return (
            f"{self.prefix} {who} step {record.step}: loss {fmt_num(record.loss, RUN_DIGITS)}, "
            f"grad norm {fmt_num(record.grad_norm, RUN_DIGITS)}, lr {lr}, {fmt_ms(record.time.get('total'))}/step"
        )

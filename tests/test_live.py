"""The live view in-process: what it keeps for the table."""

from __future__ import annotations

import io

from rich.console import Console

from stepdbg.live import TABLE_ROWS, View
from trace_factory import PARAMS, make_step


def test_the_table_keeps_the_optimizers_stepped_last() -> None:
    """A loop that builds an optimizer per iteration: the table does not grow a row for each."""
    view = View(Console(file=io.StringIO()), live=False, quiet=True)
    for optimizer in range(3 * TABLE_ROWS):
        view.on_step(make_step(optimizer, step=optimizer, every=0, params=PARAMS))
    assert sorted(view.latest) == list(range(2 * TABLE_ROWS, 3 * TABLE_ROWS))


def test_a_dumb_terminal_gets_plain_lines() -> None:
    """TERM=dumb (Emacs' shell) cannot move the cursor: no live table, however it is asked for."""
    dumb = Console(file=io.StringIO(), force_terminal=True, _environ={"TERM": "dumb"})
    smart = Console(file=io.StringIO(), force_terminal=True, _environ={"TERM": "xterm-256color"})
    assert View(dumb, live=True, quiet=False)._region is None
    assert View(smart, live=True, quiet=False)._region is not None

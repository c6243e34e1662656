"""The live view in-process: what it keeps for the table."""

from __future__ import annotations

import io
import itertools
import os
import sys
import threading
import time

import pytest
from rich.console import Console

from stepdbg.live import TABLE_ROWS, View
from stepdbg.schema import EndRecord
from terminal import set_size, shown_lines
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


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_a_resized_terminal_keeps_every_line_the_script_wrote(monkeypatch: pytest.MonkeyPatch) -> None:
    """The region is set afresh on a resize (the table's old lines cleared, not written
    over), and given back at the end without clearing at remembered coordinates, also
    after a resize no refresh has seen: the script's lines all stay."""
    pyte = pytest.importorskip("pyte")
    master, slave = os.openpty()
    set_size(slave, 20, 70)
    terminal = os.fdopen(slave, "w", buffering=1, encoding="utf-8")
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                return
            if not chunk:
                return
            chunks.append(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    monkeypatch.setattr(sys, "stderr", terminal)
    ticks = itertools.count()
    view = View(Console(file=terminal, force_terminal=True, width=70), live=True, quiet=False, clock=lambda: next(ticks))
    screen = pyte.HistoryScreen(70, 20, history=1000)
    stream = pyte.ByteStream(screen)

    def settle() -> None:  # everything written so far has reached the screen
        terminal.flush()
        time.sleep(0.2)
        stream.feed(b"".join(chunks))
        chunks.clear()

    view.start()
    for step in range(24):
        terminal.write(f"line {step}\n")
        view.on_step(make_step(0, step=step, every=0, params=PARAMS))
        if step == 11:  # taller while the run goes on
            settle()
            set_size(slave, 26, 70)
            screen.resize(26, 70)
    settle()  # taller again, then the end: no refresh in between
    set_size(slave, 32, 70)
    screen.resize(32, 70)
    terminal.write("partial")
    view.stop()
    settle()
    terminal.close()
    os.close(master)
    shown = shown_lines(screen)
    script = [line for line in shown if line.startswith(("line ", "partial"))]
    assert script == [f"line {step}" for step in range(24)] + ["partial"], "\n".join(shown)
    assert not any("phase times" in line or "anomalies:" in line for line in shown[shown.index("partial") :]), shown


def test_a_summary_after_an_internal_error_does_not_claim_an_empty_run() -> None:
    out = io.StringIO()
    view = View(Console(file=out, width=200), live=False, quiet=False)
    end = EndRecord(status="ok", exit_code=0, duration=1.0, steps=0, anomalies={}, time={})
    view.summary(end, "t.jsonl", stopped="RuntimeError: boom")
    assert out.getvalue().splitlines() == [
        "stepdbg: tracing stopped early by an internal error (RuntimeError: boom)",
        "stepdbg: trace written to t.jsonl",
    ]

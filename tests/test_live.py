"""A run's output in-process: the live table, progress lines, anomaly lines, the end-of-run report."""

from __future__ import annotations

import io
import itertools
import os
import re
import sys
import threading
import time

import pytest
from helpers import PseudoTerminal, set_size, shown_lines
from rich.console import Console
from rich.text import Text
from trace_factory import PARAMS, make_step

from stepdbg.live import TABLE_ROWS, LiveRegion
from stepdbg.progress import PLAIN_INTERVAL
from stepdbg.run_output import RunOutput
from stepdbg.schema import Anomaly, EndRecord


def test_the_table_keeps_the_optimizers_stepped_last() -> None:
    """A loop that builds an optimizer per iteration: the table does not grow a row for each."""
    view = RunOutput(Console(file=io.StringIO()), live=False, quiet=True)
    for optimizer in range(3 * TABLE_ROWS):
        view.on_step(make_step(optimizer, step=optimizer, every=0, params=PARAMS))
    assert sorted(view.table.latest) == list(range(2 * TABLE_ROWS, 3 * TABLE_ROWS))


def test_a_dumb_terminal_gets_plain_lines() -> None:
    """TERM=dumb (Emacs' shell) cannot move the cursor: no live table, however it is asked for."""
    dumb = Console(file=io.StringIO(), force_terminal=True, _environ={"TERM": "dumb"})
    smart = Console(file=io.StringIO(), force_terminal=True, _environ={"TERM": "xterm-256color"})
    assert RunOutput(dumb, live=True, quiet=False).table.region is None
    assert RunOutput(smart, live=True, quiet=False).table.region is not None


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_a_resized_terminal_keeps_every_line_the_script_wrote(monkeypatch: pytest.MonkeyPatch) -> None:
    """The region is set afresh on a resize (the table's old lines cleared, not written
    over), and given back at the end without clearing at remembered coordinates, also
    after a resize no refresh has seen: the script's lines all stay."""
    pyte = pytest.importorskip("pyte")
    pseudo = PseudoTerminal(20, 70)
    terminal, received, slave = pseudo.file, pseudo.received, pseudo.slave
    monkeypatch.setattr(sys, "stderr", terminal)
    ticks = itertools.count()
    console = Console(file=terminal, force_terminal=True, width=70)
    view = RunOutput(console, live=True, quiet=False, clock=lambda: next(ticks))
    screen = pyte.HistoryScreen(70, 20, history=1000)
    stream = pyte.ByteStream(screen)

    fed = 0
    settles = itertools.count()

    def settle() -> None:
        """Everything written so far reaches the screen: once a marker written last (a window
        title, shown nowhere) has come through the terminal, all before it has."""
        nonlocal fed
        marker = f"\x1b]2;settled {next(settles)}\x07"
        terminal.write(marker)
        terminal.flush()
        deadline = time.monotonic() + 60
        while (found := received.find(marker.encode(), fed)) < 0:
            assert time.monotonic() < deadline, "what was written never came through the terminal"
            time.sleep(0.01)
        end = found + len(marker)
        stream.feed(bytes(received[fed:end]))
        fed = end

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
    pseudo.close()
    shown = shown_lines(screen)
    script = [line for line in shown if line.startswith(("line ", "partial"))]
    assert script == [f"line {step}" for step in range(24)] + ["partial"], "\n".join(shown)
    assert not any("phase times" in line or "anomalies:" in line for line in shown[shown.index("partial") :]), shown


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_the_table_is_rendered_on_a_thread_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rendering the table takes milliseconds of rich's Python: the first rendering is made
    as the run starts, every later one on a thread of its own, which a refresh only wakes
    (it writes the lines rendered last); stopping ends that thread."""
    pseudo = PseudoTerminal(20, 70)
    monkeypatch.setattr(sys, "stderr", pseudo.file)
    rendered_on: list[threading.Thread] = []
    rendered = threading.Event()

    def render() -> Text:
        rendered_on.append(threading.current_thread())
        rendered.set()
        return Text(f"table {len(rendered_on)}")

    ticks = itertools.count()
    region = LiveRegion(Console(file=pseudo.file, force_terminal=True, width=70), render, clock=lambda: next(ticks))
    region.start()
    rendered.clear()
    region.refresh()
    assert rendered.wait(60), "the refresh woke no rendering"
    region.stop()
    pseudo.close()
    loop = threading.current_thread()
    assert rendered_on[0] is loop
    assert len(rendered_on) >= 2 and all(thread is not loop for thread in rendered_on[1:])
    assert not any(thread.name == "stepdbg-live" for thread in threading.enumerate())


def test_an_end_report_after_an_internal_error_does_not_claim_an_empty_run() -> None:
    out = io.StringIO()
    view = RunOutput(Console(file=out, width=200), live=False, quiet=False)
    end = EndRecord(status="ok", exit_code=0, duration=1.0, steps=0, anomalies={}, time={})
    view.report_end(end, "t.jsonl", stopped="RuntimeError: boom")
    assert out.getvalue().splitlines() == [
        "stepdbg: tracing stopped early by an internal error (RuntimeError: boom)",
        "stepdbg: trace written to t.jsonl",
    ]


@pytest.mark.parametrize("data", [0.0, 0.5])
def test_the_end_line_gives_the_data_share_only_to_loops_that_waited_on_a_dataloader(data: float) -> None:
    out = io.StringIO()
    view = RunOutput(Console(file=out, width=200), live=False, quiet=False)
    times = {"data": data, "forward": 1.0, "backward": 0.25, "step": 0.25, "zero_grad": 0.0, "overhead": 0.0}
    end = EndRecord(status="ok", exit_code=0, duration=2.0, steps=3, anomalies={}, time=times)
    view.report_end(end, "t.jsonl")
    expected = (
        "data 25% · forward 50% · backward 12% · step 12% · zero_grad 0% · stepdbg 0%"
        if data
        else "forward 67% · backward 17% · step 17% · zero_grad 0% · stepdbg 0%"
    )
    assert out.getvalue().splitlines()[0] == f"stepdbg: 3 steps in 2.00 s ({expected})"


MISSING_ZERO_GRAD = Anomaly(
    rule="missing-zero-grad",
    severity="error",
    step=1,
    optimizer=0,
    param="0.weight",
    message="step 1 used gradients accumulated on top of those step 0 had already consumed (first: 0.weight)",
    hint="call optimizer.zero_grad() (or model.zero_grad()) once per step, before backward(); with several "
    "optimizers or modules, clear each of them",
)
END = EndRecord(
    status="ok",
    exit_code=0,
    duration=1.71,
    steps=60,
    anomalies={"missing-zero-grad": 59},
    time={"forward": 0.6, "backward": 0.8, "step": 0.04, "zero_grad": 0.001, "overhead": 0.2},
)


def own_lines(terminal: bool, width: int = 80) -> tuple[list[str], list[str]]:
    """What a run's output prints for an anomaly and the end-of-run report, and the messages it printed."""
    out = io.StringIO()
    console = Console(file=out, width=width, force_terminal=terminal, color_system=None)
    view = RunOutput(console, live=False, quiet=False)
    view.on_anomaly(MISSING_ZERO_GRAD)
    view.report_end(END, "/home/you/experiments/a rather long folder name/missing_zero_grad.stepdbg.jsonl")
    whole = io.StringIO()
    unwrapped = RunOutput(Console(file=whole, width=10_000, color_system=None), live=False, quiet=False)
    unwrapped.on_anomaly(MISSING_ZERO_GRAD)
    unwrapped.report_end(END, "/home/you/experiments/a rather long folder name/missing_zero_grad.stepdbg.jsonl")
    return out.getvalue().splitlines(), whole.getvalue().splitlines()


def test_own_lines_wrap_at_word_boundaries_on_a_terminal() -> None:
    """An anomaly (~300 characters) and the end-of-run report at 80 columns: no line wider than the
    terminal, and every break between two words, so that the lines join back into the message."""
    lines, messages = own_lines(terminal=True)
    assert max(map(len, lines)) <= 80 and len(lines) > len(messages), lines
    joined = " ".join(line.rstrip() for line in lines)
    for message in messages:
        assert message in joined, (message, lines)
    assert sum(len(message) > 80 for message in messages) >= 2, "nothing long enough to wrap"


def test_own_lines_are_whole_in_a_pipe() -> None:
    """A pipe or a file (CI logs, ``2> log``, grep) gets one message a line, however long."""
    lines, messages = own_lines(terminal=False)
    assert lines == messages


def test_plain_progress_lines_come_every_interval() -> None:
    """Without the table: a line at the first step `PLAIN_INTERVAL` seconds after the last one."""
    out = io.StringIO()
    now = [0.0]
    view = RunOutput(Console(file=out, width=200), live=False, quiet=False, clock=lambda: now[0])
    printed = []
    times = [1.0, PLAIN_INTERVAL - 0.1, PLAIN_INTERVAL, PLAIN_INTERVAL + 1, 2 * PLAIN_INTERVAL + 0.5]
    for step, now[0] in enumerate(times):
        view.on_step(make_step(0, step=step, every=0, params=PARAMS))
        printed.append(out.getvalue().count("\n"))
    assert printed == [0, 0, 1, 1, 2]
    first = out.getvalue().splitlines()[0]
    assert first == "stepdbg: optimizer 0 step 2: loss 0.6667, grad norm 1.2, lr 0.1, 36.00 ms/step"


def table_at(width: int, optimizers: int = 2) -> list[str]:
    out = io.StringIO()
    console = Console(file=out, width=width, color_system=None)
    view = RunOutput(console, live=False, quiet=True)
    for optimizer in range(optimizers):
        view.on_step(make_step(optimizer, step=12345 * optimizer, every=0, params=PARAMS))
    console.print(view.table.render())
    return out.getvalue().splitlines()


@pytest.mark.parametrize("width", range(20, 81, 4))
def test_a_narrow_terminal_drops_whole_columns(width: int) -> None:
    """Never a value cut to ``1.1…``: the columns the terminal cannot hold go, the least needed
    first (step, loss and grad norm stay longest), and those left keep the table's order."""
    headers = ["opt", "step", "loss", "grad norm", "lr", "data", "fwd", "bwd", "step", "zero"]
    kept_first = [1, 2, 3, 0, 4, 5, 6, 7, 8, 9]
    lines = table_at(width)
    table = lines[1:5]  # headers, rule, a row per optimizer
    assert all(len(line) <= width for line in table) and not any("…" in line for line in table), lines
    shown = re.split(r"\s{2,}", lines[1].strip())
    assert shown == [headers[index] for index in sorted(kept_first[: len(shown)])], lines
    assert len(shown) >= 3 or width < 30
    assert (len(shown) == len(headers)) is (width >= len(table_at(200)[1].rstrip()))

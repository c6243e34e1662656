"""stepdbg's SIGTERM and SIGHUP handler on its own, in a bare Python process (no torch, no
session): what it leaves alone, and where it waits before ending the session. The real
runs are in test_run.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="POSIX signals")

HANDLED = """
import signal, time
from stepdbg.termination import TerminationHandler

collector_running = [True]  # the signal first finds the main thread in collector code

def busy(frame):
    print("busy" if collector_running else "free", flush=True)
    return bool(collector_running and collector_running.pop())

def end(signum, stuck):
    print(f"ended by {signal.Signals(signum).name}, stuck: {stuck}", flush=True)

signal.signal(signal.SIGTERM, signal.SIG_IGN)  # as nohup leaves SIGHUP, here SIGTERM
TerminationHandler(end, busy).install()
signal.raise_signal(signal.SIGTERM)
print("SIGTERM ignored", flush=True)
signal.raise_signal(signal.SIGHUP)
time.sleep(600)  # the signal, sent again, interrupts it
print("not ended")
"""


def test_a_signal_in_collector_code_ends_the_session_once_it_has_returned_and_an_ignored_one_stays_ignored() -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    proc = subprocess.run(
        [sys.executable, "-c", HANDLED], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == -1, proc.stderr  # SIGHUP's default action, after the session ended
    assert proc.stdout.splitlines() == ["SIGTERM ignored", "busy", "free", "ended by SIGHUP, stuck: False"], proc.stderr

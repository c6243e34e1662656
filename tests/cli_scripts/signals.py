"""Trains, and is sent a signal, the way argv[1] says: how a run ends on SIGTERM and SIGHUP.

    python signals.py SIGTERM|SIGHUP|own-handler|stuck

``SIGTERM``, ``SIGHUP``: after 5 steps the process is sent the signal (from its own
main thread, so that it arrives there and then), and would train 100 steps more.
``own-handler``: installs a SIGTERM handler that calls the one it replaced, as
Lightning's does for Slurm's requeue, and stops at the step after the signal.
``stuck``: after 3 steps the main thread waits in a read that never returns, with
SIGTERM blocked, as a rank waits in a collective for a rank that died, where no
signal reaches it; a thread sends SIGTERM to the process once it waits there.
"""

import os
import signal
import sys
import threading
import time

from tiny_training import train


def waiting_in_read(fd: int) -> bool:
    """Whether the main thread is blocked in a system call on ``fd`` (Linux's /proc: the call, then its arguments)."""
    with open(f"/proc/self/task/{threading.main_thread().native_id}/syscall") as f:
        fields = f.read().split()
    return len(fields) > 1 and fields[1] == hex(fd)


def terminate_once_waiting(fd: int) -> None:
    while not waiting_in_read(fd):
        time.sleep(0.01)
    os.kill(os.getpid(), signal.SIGTERM)


how = sys.argv[1]
if how in ("SIGTERM", "SIGHUP"):
    train(5)
    print("trained 5 steps", flush=True)
    signal.raise_signal(getattr(signal, how))
    train(100)
    print("not terminated")
elif how == "own-handler":
    previous = signal.getsignal(signal.SIGTERM)
    received = []

    def on_sigterm(signum: int, frame: object) -> None:
        received.append(signum)
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)
    steps = 0
    while not received:
        train(1)
        steps += 1
        if steps == 3:
            signal.raise_signal(signal.SIGTERM)
    train(1)
    print(f"stopped cleanly after {steps + 1} steps")
elif how == "stuck":
    train(3)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    read_end, _ = os.pipe()
    threading.Thread(target=terminate_once_waiting, args=(read_end,), daemon=True).start()
    os.read(read_end, 1)
    print("not terminated")

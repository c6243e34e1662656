"""SIGTERM and SIGHUP end a run with its trace whole, as Ctrl-C does.

torchrun (after a rank failed), ``torch.multiprocessing`` (the ranks left after one
failed), Slurm and Kubernetes stop a process with SIGTERM; a closed terminal sends
SIGHUP. Their default action ends the process on the spot: no end record, the steps
still queued for the trace writer lost, the terminal's scroll region left set. While
a session runs, each of them that still has its default action gets a handler that
ends the session (every completed step written, an end record with status
``"terminated"``, the terminal given back, the end-of-run report) and then lets the
signal's default action end the process, which the launcher sees die of it as it
would have.

- The script's own handler wins. One that it installs replaces stepdbg's; if it calls
  the handler it replaced, as Lightning's does (for Slurm's requeue), stepdbg's does
  nothing: the signal is the script's, and the run ends when the process does.
- Python runs a handler on the main thread, between two bytecodes. Where those are in
  the collector's code (a hook; the trace writer, whose lock it may hold), the handler
  does not end the session there: the signal is sent again to the main thread a moment
  later, until it finds the script's code.
- A main thread blocked in C that no signal interrupts (a collective waiting for a rank
  that died, where torchrun's SIGTERM finds the surviving ranks) never gets to the
  handler. A watchdog thread, woken through Python's signal wakeup fd, then ends the
  session itself after `GRACE` seconds, and exits with 128 + the signal's number (only
  the main thread can hand a signal back to its default action).
- Once the session is ending on its own (the script has returned), a signal changes
  nothing: the run ends as it was ending.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from types import FrameType

from .exit_codes import killed_by

SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))
GRACE = 2.0
"""Seconds the watchdog gives the main thread to run the handler before ending the session itself."""
RETRY = 0.01
"""Seconds before a signal that found the main thread in collector code is sent to it again."""

_os_exit = os._exit  # Python's own: a session in progress replaces os._exit (see `session`)


class TerminationHandler:
    """Ends a session on SIGTERM and SIGHUP, from `install` to `uninstall`."""

    def __init__(self, end: Callable[[int, bool], None], busy: Callable[[FrameType | None], bool]) -> None:
        """``end(signum, stuck)`` ends the session; ``stuck``: on the watchdog's thread, the
        main thread blocked where it is. ``busy(frame)``: whether the main thread, at
        ``frame``, is in collector code."""
        self._end = end
        self._busy = busy
        self._handler = self._handle  # one object, that signal.getsignal gives back
        self._installed: list[int] = []
        self._ending = threading.Lock()
        """Taken by whoever ends the session: the handler, the watchdog, or the session itself (`hold`)."""
        self._ending_begun = threading.Event()
        self._by_watchdog = False
        self._wakeup: tuple[int, int] | None = None
        """The pipe Python writes the number of each signal to (read end, write end)."""

    def install(self) -> None:
        """Handle each signal that has its default action. Only the main thread may set
        handlers; on Windows, which stops processes otherwise, nothing is installed."""
        if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_kill"):
            return
        for signum in SIGNALS:
            if signal.getsignal(signum) is signal.SIG_DFL:  # SIG_IGN (nohup) or the process's own handler stay
                signal.signal(signum, self._handler)
                self._installed.append(signum)
        if self._installed:
            self._start_watchdog()

    def hold(self) -> None:
        """The session is ending on its own: from now on, a signal changes nothing."""
        if self._ending.acquire(blocking=False):
            self._ending_begun.set()

    def uninstall(self) -> None:
        """The default actions back, where the script left stepdbg's handlers in place."""
        if threading.current_thread() is not threading.main_thread():
            return  # the watchdog ending the session: the process exits next
        wakeup = self._restore()
        if wakeup is not None:
            os.close(wakeup[1])  # the watchdog reads the end of the pipe, closes its end and returns

    def detach(self) -> None:
        """In a forked child: its signals are its own, with their default actions (a rank's
        session installs its own handler), and its wakeup fd no longer the parent's pipe."""
        wakeup = self._restore()
        if wakeup is not None:
            os.close(wakeup[0])  # the child has no watchdog
            os.close(wakeup[1])

    def _restore(self) -> tuple[int, int] | None:
        """Put back the default actions and the wakeup fd; the pipe, for the caller to close."""
        installed, self._installed = self._installed, []
        wakeup, self._wakeup = self._wakeup, None
        for signum in installed:
            if signal.getsignal(signum) is self._handler:
                signal.signal(signum, signal.SIG_DFL)
        if wakeup is not None:
            current = signal.set_wakeup_fd(-1)
            if current != wakeup[1]:  # the script set its own since (asyncio's signal handlers): keep it
                signal.set_wakeup_fd(current)
        return wakeup

    # ---- the main thread ------------------------------------------------------------------

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if signal.getsignal(signum) is not self._handler:
            return  # called by the script's handler, which replaced stepdbg's: the signal is the script's
        if self._busy(frame):
            retry = threading.Timer(RETRY, self._send_again, (signum,))
            retry.daemon = True
            retry.start()
            return
        if not self._ending.acquire(blocking=False):
            if self._by_watchdog:
                threading.Event().wait()  # the watchdog is ending the session, and then the process
            return  # the session is ending on its own
        self._ending_begun.set()
        try:
            self._end(signum, False)
        finally:
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)
            _os_exit(killed_by(signum))  # only where the script blocked the signal on this thread

    def _send_again(self, signum: int) -> None:
        if signal.getsignal(signum) is self._handler and not self._ending_begun.is_set():
            signal.pthread_kill(threading.main_thread().ident or 0, signum)

    # ---- the watchdog -----------------------------------------------------------------------

    def _start_watchdog(self) -> None:
        read, write = os.pipe()
        os.set_blocking(write, False)
        previous = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
        if previous != -1:  # the process reads its own (an event loop's): no watchdog
            signal.set_wakeup_fd(previous)
            os.close(read)
            os.close(write)
            return
        self._wakeup = (read, write)
        threading.Thread(target=self._watch, args=(read,), name="stepdbg-signals", daemon=True).start()

    def _watch(self, read: int) -> None:
        try:
            while data := os.read(read, 64):
                for signum in set(data) & set(self._installed):
                    self._unless_handled(signum)
        finally:
            os.close(read)

    def _unless_handled(self, signum: int) -> None:
        """The main thread had `GRACE` seconds to begin the ending: if it has not, end the session here."""
        if self._ending_begun.wait(GRACE) or signal.getsignal(signum) is not self._handler:
            return
        if not self._ending.acquire(blocking=False):
            return
        self._by_watchdog = True
        self._ending_begun.set()
        try:
            self._end(signum, True)
        finally:
            _os_exit(killed_by(signum))

"""What stepdbg's exit codes mean, for every command and for ``stepdbg.trace()``.

``stepdbg run`` exits with the script's own code, as ``python`` would (`SCRIPT_RAISED`
for an uncaught exception, `INTERRUPTED` for Ctrl-C, `killed_by` a signal for SIGTERM
and SIGHUP), unless ``--strict`` fails a run that succeeded (`STRICT`). ``diff``
answers as diff(1): `OK`, `DIFFER` or `USAGE`. Every command exits `USAGE` after one
``stepdbg: error:`` line: bad options, a trace that cannot be read or written, a script
that does not exist.
"""

from __future__ import annotations

OK = 0
"""Done: the script succeeded, the trace was shown, the runs agree."""
DIFFER = 1
"""``diff``: the runs differ."""
SCRIPT_RAISED = 1
"""``run``: the script raised an exception it did not catch (Python's own code for it)."""
USAGE = 2
"""Bad input, one ``stepdbg: error:`` line (``diff``'s "trouble")."""
STRICT = 3
"""``run --strict``: the script succeeded, but a warning or an error was found."""
INTERRUPTED = 130
"""Ctrl-C: 128 + SIGINT (2), as a shell reports it."""


def killed_by(signum: int) -> int:
    """What a shell reports for a process that a signal's default action ended: 128 + its
    number (SIGTERM: 143, SIGHUP: 129)."""
    return 128 + signum

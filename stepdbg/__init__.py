"""stepdbg: a debugger and profiler for PyTorch training steps.

``stepdbg run train.py`` traces every ``zero_grad``, backward and optimizer
step of an unmodified script into a JSON Lines trace (see ``schema``), which
``stepdbg show`` and ``stepdbg diff`` read back.
"""

from __future__ import annotations

__version__ = "0.1.0"

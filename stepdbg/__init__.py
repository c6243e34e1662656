"""stepdbg: a debugger and profiler for PyTorch training steps.

``stepdbg run train.py`` traces every ``zero_grad``, backward and optimizer
step of an unmodified script into a JSON Lines trace (see ``schema``), which
``stepdbg show`` and ``stepdbg diff`` read back. From Python (a notebook, code
started by a launcher stepdbg does not wrap), ``stepdbg.trace()`` traces a block
or a function the same way, and ``stepdbg.load()`` reads a trace back
(docs/api.md).
"""

from __future__ import annotations

__version__ = "0.1.0"

from .reader import TraceReader, load
from .schema import Anomaly, EndRecord, Header, OptimizerInfo, StepRecord
from .tracefile import TraceError
from .tracing import NestedTraceError, StrictError, TracedRun, Tracer, trace

__all__ = [
    "Anomaly",
    "EndRecord",
    "Header",
    "NestedTraceError",
    "OptimizerInfo",
    "StepRecord",
    "StrictError",
    "TraceError",
    "TraceReader",
    "TracedRun",
    "Tracer",
    "load",
    "trace",
]

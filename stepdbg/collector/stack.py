"""What the Python stack says, for the rare paths that must ask it: which optimizers' ``step``
is running, and whether torch.distributed's ``Join`` is shadowing other ranks."""

from __future__ import annotations

import os
import sys
import types
from collections.abc import Iterator

_JOIN_MODULE = os.path.join("distributed", "algorithms", "join.py")


def _callers() -> Iterator[types.FrameType]:
    """The frames on the stack, innermost first, stepdbg's own included (for rare paths only)."""
    frame: types.FrameType | None = sys._getframe(1)
    while frame is not None:
        yield frame
        frame = frame.f_back


def optimizers_stepping() -> set[int]:
    """``id``s of the optimizers whose ``step`` is on the stack (a rare path: see
    `Collector._abandon_steps_that_raised`)."""
    return {
        id(frame.f_locals.get("self"))
        for frame in _callers()
        if frame.f_code.co_name == "step" and "self" in frame.f_code.co_varnames
    }


def shadowing_a_join() -> bool:
    """Whether this runs inside torch.distributed's ``Join`` as it shadows the ranks still
    training (uneven inputs): a rank out of inputs steps its ZeroRedundancyOptimizer on the
    gradients it has, by design. Walks the stack: only where step-without-backward would fire."""
    return any(
        frame.f_code.co_name == "__exit__" and frame.f_code.co_filename.endswith(_JOIN_MODULE) for frame in _callers()
    )

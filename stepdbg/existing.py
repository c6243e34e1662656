"""What this process built before tracing began: a notebook's earlier cells, a launcher's set-up.

``stepdbg run`` starts before the script builds anything. ``stepdbg.trace()`` often
starts after the model, its optimizer and its lr scheduler were built (in the cell
before), so their registrations went unseen: without them, parameters would have no
names, the first backward would look like a loop with no optimizer, and scheduler
steps would go unnoticed. They are looked for once, when tracing starts, among the
objects Python's garbage collector tracks, oldest first: optimizers are numbered in
the order they were built, as under ``stepdbg run``. An object is told by its type
alone (``isinstance`` may call an object's own ``__class__``).
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator
from typing import cast

import torch
from torch.optim.lr_scheduler import ChainedScheduler, LRScheduler

from .collector import Collector
from .instrument import Instrumentation
from .module_tree import ModuleTree

_SCHEDULERS = (LRScheduler, ChainedScheduler)


def adopt_existing(tree: ModuleTree, collector: Collector, instrumentation: Instrumentation) -> None:
    """Take the models, optimizers and lr schedulers alive now as if built under the hooks."""
    for obj in _oldest_first():
        kind = type(obj)
        if issubclass(kind, torch.nn.Module):
            tree.learn(cast(torch.nn.Module, obj))
        elif issubclass(kind, torch.optim.Optimizer):
            collector.track_for(obj)  # a wrapper (Lightning's, accelerate's) finds its optimizer's
        elif issubclass(kind, _SCHEDULERS):
            collector.on_scheduler_created(obj)
    if "torch._dynamo" in sys.modules:  # something may have been compiled already
        instrumentation.keep_compiler_out()


def _oldest_first() -> Iterator[object]:
    """CPython keeps each generation oldest first, and the older generations hold older objects."""
    for generation in (2, 1, 0):
        yield from gc.get_objects(generation=generation)

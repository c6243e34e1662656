"""`stepdbg diff`: compare two runs step by step and say where they part.

`diff_compare` reads both traces once, side by side (streaming, paired by
optimizer and step); the renderer of the format asked for (`renderers`: ``text``,
``json``) writes its `DiffResult`.

Numbers agree when ``|a - b| <= atol + rtol * |a|`` (a is the first trace's), NaN
agrees with NaN, and a missing value never agrees with a number. Compared per
step: calls (their order too), backward_calls, skipped, loss, grad_norm,
group_grad_norms, lr, and on the steps both traces have detail for,
update_ratio and each parameter's grad norm and update ratio (``--ignore`` leaves
fields out: ``loss`` when comparing DDP ranks, whose batches differ while their
all-reduced gradients must not). Never compared: ``t`` and ``time``; times are
reported as B/A ratios of per-step medians.

Exit codes, as diff(1):

- 0 (`exit_codes.OK`): every common step agrees and the runs have the same steps, optimizers,
  parameter names and outcome;
- 1 (`exit_codes.DIFFER`): any of those differ: a value, a step only one trace has (a run that stopped
  early), an optimizer only one has, a renamed parameter, a different ending;
- 2 (`exit_codes.USAGE`): trouble: a trace is missing, unreadable, corrupt or of a newer schema
  (`TraceError`), or neither trace has a single step, so nothing can be compared
  (`ValueError`). The CLI prints those as one error line.

Versions, devices, ``every`` and anomalies are shown as notes, never counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from rich.console import Console

from .diff_compare import Tolerance, compare_traces
from .renderers import DEFAULT_FORMAT, DIFF_FORMATS, Output


@dataclass
class DiffOptions:
    rtol: float = 1e-5
    atol: float = 1e-8
    format: str = DEFAULT_FORMAT
    """A name in `renderers.DIFF_FORMATS`."""
    quiet: bool = False
    ignore: frozenset[str] = frozenset()


def diff_traces(
    a: str | Path, b: str | Path, options: DiffOptions, console: Console | None = None, out: TextIO | None = None
) -> int:
    """``stepdbg diff A B``: print the comparison (text on ``console``, data on ``out``: both stdout)
    and return the exit code."""
    render = DIFF_FORMATS[options.format]
    result = compare_traces(a, b, Tolerance(options.rtol, options.atol), options.ignore)
    if not options.quiet:
        render(result, Output(console, out))
    return result.exit_code

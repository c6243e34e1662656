"""``stepdbg diff --format json`` (``--json``): the comparison as one JSON object, for programs.

The keys are listed in docs/trace-format.md.
"""

from __future__ import annotations

from typing import Any

from .. import exit_codes
from ..diff_compare import FIELDS, DiffResult
from ..tracefile import dumps
from .output import Output


def diff_json(result: DiffResult) -> dict[str, Any]:
    """Everything the text view says, and the exit code."""
    comparison = result.comparison
    return {
        "a": result.run_a.to_json(),
        "b": result.run_b.to_json(),
        "rtol": result.tol.rtol,
        "atol": result.tol.atol,
        "ignored": comparison.ignored,
        "exit_code": result.exit_code,
        "agree": result.exit_code == exit_codes.OK,
        "steps_compared": comparison.compared,
        "steps_differing": comparison.differing,
        "first": comparison.first.to_json() if comparison.first else None,
        "first_param_difference": comparison.first_params.to_json() if comparison.first_params else None,
        "fields": {
            name: {"optimizer": counted.first[0], "first_step": counted.first[1], "steps": counted.steps}
            for name, counted in sorted(comparison.fields.items(), key=lambda item: FIELDS.index(item[0]))
        },
        "reconverged": comparison.reconverged,
        "structure": result.structure,
        "notes": result.notes,
        "timing": comparison.timing(),
    }


def write(result: DiffResult, out: Output) -> None:
    out.data.write(dumps(diff_json(result)) + "\n")

"""``stepdbg show --format json`` of several traces: the ranks' comparison as one JSON object.

The keys are listed in docs/trace-format.md.
"""

from __future__ import annotations

from ..ranks import RankComparison
from ..tracefile import dumps
from .output import Output


def write(comparison: RankComparison, out: Output) -> None:
    out.data.write(dumps(comparison.to_json()) + "\n")

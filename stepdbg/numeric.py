"""Folding a run's figures: which values count, their medians, and a compact list to hold them.

`show` and `diff` keep a float per step for their medians; these keep it at 8 bytes.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from typing import TypeGuard


def is_finite(value: float | None) -> TypeGuard[float]:
    return value is not None and math.isfinite(value)


def median(values: Sequence[float]) -> float | None:
    """The median, or None for no values; sorts a copy, so ``values`` may be an array."""
    if not values:
        return None
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


def floats() -> array[float]:
    """A compact float list: 8 bytes a value, where a list of floats takes 32."""
    return array("d")

"""When does one method "lead" another: a gap larger than two pooled standard errors over seeds."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def pooled_standard_error(a: Sequence[float], b: Sequence[float]) -> float:
    """Standard error of the difference of two means, ``sqrt(s_a²/n_a + s_b²/n_b)`` (sample variances).

    Raises:
        ValueError: either sample has fewer than two values (no variance estimate, no claim possible).
    """
    if len(a) < 2 or len(b) < 2:
        raise ValueError("a standard error needs at least two seeds per method")
    return math.sqrt(statistics.variance(a) / len(a) + statistics.variance(b) / len(b))


def leads(a: Sequence[float], b: Sequence[float], z: float = 2.0) -> bool:
    """Whether sample ``a`` leads ``b``: ``mean(a) − mean(b) > z × pooled standard error``."""
    return statistics.fmean(a) - statistics.fmean(b) > z * pooled_standard_error(a, b)


def verdict(a: Sequence[float], b: Sequence[float], z: float = 2.0) -> str:
    """``"A leads"``, ``"B leads"`` or ``"tie"`` (gap within ``z`` pooled standard errors)."""
    if leads(a, b, z):
        return "A leads"
    if leads(b, a, z):
        return "B leads"
    return "tie"

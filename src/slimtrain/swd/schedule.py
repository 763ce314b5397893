"""The per-step exponential growth of the SWD coefficient a (docs/swd.md#schedule-and-final-pruning)."""

from __future__ import annotations

import math

__all__ = ["ExponentialSchedule"]


class ExponentialSchedule:
    """a_t = a_min·(a_max/a_min)^{t/T}: a_0 = a_min, a_T = a_max, log a_t affine in t.

    t is the global mini-batch index (epoch·B + batch), T = E·B, so the value depends on t only and a resumed
    run continues where it stopped. Past T the value stays at a_max. A constant a (the reference ``fix_a``) is
    ``a_min == a_max``.

    Args:
        a_min: Value at t = 0, > 0.
        a_max: Value at t = T, > 0.
        total_steps: T, the number of mini-batches of the regularised phase, ≥ 1.

    Raises:
        ValueError: If a bound is not positive or ``total_steps`` < 1.
    """

    def __init__(self, a_min: float, a_max: float, total_steps: int) -> None:
        if not (a_min > 0 and a_max > 0):
            raise ValueError(f"a_min and a_max must be positive, got a_min={a_min}, a_max={a_max}")
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        self.a_min = float(a_min)
        self.a_max = float(a_max)
        self.total_steps = int(total_steps)

    def __call__(self, step: int) -> float:
        """Value of a at global step ``step`` (≥ 0)."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        progress = min(step, self.total_steps) / self.total_steps
        return self.a_min * math.exp(progress * math.log(self.a_max / self.a_min))

"""Divergence bound of heavy-ball SGD on the SWD quadratic (docs/swd.md#stability).

A selected weight sees, besides the loss, a quadratic of curvature h = μ_opt + μ·a_t (μ_opt: the optimizer's
weight decay, μ: the SWD scale, so h = μ(1 + a_t) in the reference set-up). Heavy-ball SGD with learning rate
η and momentum β on a quadratic of curvature h is stable iff 0 < η·h < 2(1 + β).
"""

from __future__ import annotations

__all__ = ["is_stable", "stability_limit"]


def stability_limit(momentum: float) -> float:
    """Upper bound 2(1 + β) on η·h for heavy-ball SGD with momentum β.

    Args:
        momentum: β in [0, 1).

    Returns:
        2(1 + β).
    """
    return 2.0 * (1.0 + momentum)


def is_stable(lr: float, curvature: float, momentum: float) -> bool:
    """Whether η·h < 2(1 + β), i.e. the selected weights do not diverge under the SWD penalty.

    Args:
        lr: Learning rate η.
        curvature: h = μ_opt + μ·a_t.
        momentum: β.

    Returns:
        True below the bound, False at or above it.
    """
    return lr * curvature < stability_limit(momentum)

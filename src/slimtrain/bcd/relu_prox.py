"""Exact proximal map of the ReLU coupling (docs/nnbcd.md; Zeng et al., ICML 2019; Li et al. 2023).

The pre-activation update U_i of NN-BCD separates into independent scalar problems
``f(u) = ½(v − max(u, 0))² + (g/2)(u − c)²``. ``f`` is convex on each half-line, so the global minimiser
is the better of the two branch minimisers.
"""

from __future__ import annotations

import torch


def relu_prox(v: torch.Tensor, c: torch.Tensor, g: float | torch.Tensor) -> torch.Tensor:
    """Elementwise global minimiser of ``½(v − relu(u))² + (g/2)(u − c)²`` over u.

    Branch u ≥ 0 gives ``max((v + g·c)/(1 + g), 0)``, branch u ≤ 0 gives ``min(c, 0)``; the branch with the
    smaller value wins and ties go to the non-negative branch (docs/nnbcd.md#the-relu-prox).

    Args:
        v: Target activations.
        c: Centre of the quadratic, broadcastable with ``v``.
        g: Positive weight of the quadratic (scalar or broadcastable tensor).

    Returns:
        The minimiser u, with the broadcast shape of ``v`` and ``c``.

    Raises:
        ValueError: If a scalar ``g`` is not positive.
    """
    if not isinstance(g, torch.Tensor) and not g > 0:
        raise ValueError(f"relu_prox needs g > 0, got {g}")
    u_pos = ((v + g * c) / (1 + g)).clamp_min(0)
    u_neg = c.clamp_max(0)
    # On u ≥ 0 relu(u) = u and on u ≤ 0 relu(u) = 0, so each branch value is a plain quadratic.
    f_pos = 0.5 * (v - u_pos) ** 2 + 0.5 * g * (u_pos - c) ** 2
    f_neg = 0.5 * v**2 + 0.5 * g * (u_neg - c) ** 2
    return torch.where(f_pos <= f_neg, u_pos, u_neg)

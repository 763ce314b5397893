"""Lp norm balls ``{x : ‖x‖_p ≤ r}`` for ``1 ≤ p ≤ ∞`` (docs/sfw.md#constraint-sets-and-their-lmos).

The L2 ball is also what every tensor without a structured set gets in the filter and low-rank modes of
Zimmer, Spiegel, Pokutta (arXiv:2205.11921), and what the k-support ball becomes while ``k`` is delayed.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from slimtrain.fw.base import ConstraintSet

__all__ = ["LpBall"]


class LpBall(ConstraintSet):
    """The ball ``{x ∈ R^n : ‖x‖_p ≤ r}``.

    LMO (docs/sfw.md#constraint-sets-and-their-lmos): ``p = 2``: ``−r·g/‖g‖₂``; ``p = 1``:
    ``−r·sign(g_i)·e_i`` at the largest ``|g_i|``; ``p = ∞``: ``−r·sign(g)``; otherwise ``v_i =
    −r·sign(g_i)·|g_i|^{q−1}/‖g‖_q^{q−1}`` with ``q = p/(p−1)``. The L2 diameter is ``D = 2r·max(1,
    n^{1/2−1/p})`` (``2r√n`` for ``p = ∞``); the reference code's conversion ``r = (D/2)·n^{1/p−1/2}`` is
    wrong for ``1 < p < 2`` and is not reproduced.

    Args:
        n: the number of entries.
        radius: the radius ``r``.
        p: the order, ``1 ≤ p ≤ ∞`` (``float("inf")`` for the max-norm).
    """

    name = "lp_ball"

    def __init__(self, n: int, radius: float, p: float = 2.0) -> None:
        super().__init__((n,), radius)
        if not p >= 1:
            raise ValueError(f"LpBall: p must be ≥ 1, got {p}")
        self.p = float(p)

    def config(self) -> dict[str, Any]:
        """Constructor arguments."""
        return {"n": self.shape[0], "radius": self.radius, "p": self.p}

    def diameter_factor(self) -> float:
        """``D/r = 2·max(1, n^{1/2−1/p})``."""
        n = self.shape[0]
        exponent = 0.5 if math.isinf(self.p) else 0.5 - 1.0 / self.p
        return 2.0 * max(1.0, n**exponent)

    def gauge_batch(self, x: Tensor) -> Tensor:
        """``‖x‖_p`` per row."""
        return torch.linalg.vector_norm(x, ord=self.p, dim=1)

    def lmo_rows(self, grads: Tensor, radii: Tensor) -> Tensor:
        """Batched LMO of the Lp ball (see the class docstring)."""
        if self.p == 2:
            norms = torch.linalg.vector_norm(grads, dim=1, keepdim=True)
            v = -radii * grads / norms.clamp_min(torch.finfo(grads.dtype).tiny)
        elif self.p == 1:
            idx = grads.abs().argmax(dim=1, keepdim=True)
            v = torch.zeros_like(grads).scatter_(1, idx, -radii * grads.gather(1, idx).sign())
        elif math.isinf(self.p):
            v = -radii * grads.sign()
        else:
            q = self.p / (self.p - 1)
            # Scale by the largest entry first so that |g|^{q−1} cannot overflow.
            a = grads.abs()
            a = a / a.amax(dim=1, keepdim=True).clamp_min(torch.finfo(grads.dtype).tiny)
            w = a ** (q - 1)
            denom = torch.linalg.vector_norm(a, ord=q, dim=1, keepdim=True) ** (q - 1)
            v = -radii * grads.sign() * w / denom.clamp_min(torch.finfo(grads.dtype).tiny)
        return v

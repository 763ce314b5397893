"""The K-sparse polytope of Miao et al. (ICLR 2022), docs/sfw.md#constraint-sets-and-their-lmos."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from slimtrain.fw import native
from slimtrain.fw.base import VectorKConstraintSet, top_magnitude_indices

__all__ = ["KSparsePolytope"]


class KSparsePolytope(VectorKConstraintSet):
    """``conv{v ∈ {0, ±r}^n : ‖v‖₀ = k} = {x : ‖x‖∞ ≤ r, ‖x‖₁ ≤ k·r}``.

    LMO: ``v_i = −r·sign(g_i)`` on the ``k`` entries of largest ``|g_i|``, 0 elsewhere (signs only, not the
    values). Gauge ``max(‖x‖∞, ‖x‖₁/k)``; L2 diameter ``D = 2r√k``. Ties in ``|g|`` are broken by
    ``torch.topk``, or by lowest index where the compiled kernel of :mod:`slimtrain.fw.native` runs (CPU
    float32); every choice gives the same LMO value.

    Args:
        n: the number of entries.
        k: the number of non-zeros of a vertex, ``1 ≤ k ≤ n`` (use :func:`resolve_k` for fractions).
        radius: the radius ``r`` (the max-norm bound).
    """

    name = "k_sparse"

    def diameter_factor(self) -> float:
        """``D/r = 2√k``."""
        return 2.0 * math.sqrt(self.k)

    def gauge_batch(self, x: Tensor) -> Tensor:
        """``max(‖x‖∞, ‖x‖₁/k)`` per row."""
        a = x.abs()
        return torch.maximum(a.amax(dim=1), a.sum(dim=1) / self.k)

    def lmo_rows(self, grads: Tensor, radii: Tensor) -> Tensor:
        """Batched LMO (see the class docstring)."""
        if native.supports(grads):
            return native.top_magnitude_lmo(grads, radii, self.k, "k_sparse")
        idx = top_magnitude_indices(grads, self.k)
        vals = -radii * grads.gather(1, idx).sign()
        return torch.zeros_like(grads).scatter_(1, idx, vals)

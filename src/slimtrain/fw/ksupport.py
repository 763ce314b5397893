"""The k-support norm ball and its group version over conv filters.

Zimmer, Spiegel, Pokutta, "Compression-aware Training of Neural Networks using Frank-Wolfe",
arXiv:2205.11921; k-support norm of Argyriou, Foygel, Srebro (NeurIPS 2012).
docs/sfw.md#constraint-sets-and-their-lmos.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from slimtrain.fw import native
from slimtrain.fw.base import KConstraintSet, VectorKConstraintSet, check_k, top_magnitude_indices

__all__ = ["GroupKSupportNormBall", "KSupportNormBall", "k_support_norm"]


def k_support_norm(x: Tensor, k: int) -> Tensor:
    """The k-support norm of each row of ``x`` (shape ``(b, n)``), exact for every ``1 ≤ k ≤ n``.

    Closed form of Argyriou et al. (2012), Prop. 2.1 (docs/sfw.md#constraint-sets-and-their-lmos): with ``z``
    the sorted ``|x|`` (descending, ``z₀ = +∞``) and ``T_j = Σ_{i ≥ j} z_i``, take the smallest ``s ∈ {0, …,
    k−1}`` with ``z_{k−s−1} > T_{k−s}/(s+1)``; the norm is ``sqrt(Σ_{i<k−s} z_i² + T_{k−s}²/(s+1))``.
    ``k = 1`` gives ``‖x‖₁`` and ``k = n`` gives ``‖x‖₂``. (The reference code returns
    ``‖x‖₁/√(n+1)`` at ``k = 1``; that bug is not reproduced.)

    Args:
        x: shape ``(b, n)``.
        k: the sparsity level.

    Returns:
        Shape ``(b,)``.
    """
    n = x.shape[1]
    check_k("k_support_norm", k, n)
    z = x.abs().sort(dim=1, descending=True).values
    tail = z.flip(1).cumsum(1).flip(1)  # tail[:, j−1] = T_j
    head_sq = torch.nn.functional.pad((z * z).cumsum(1), (1, 0))  # head_sq[:, m] = Σ_{i ≤ m} z_i²
    s = torch.arange(k, device=x.device)
    j = k - s  # 1-based start of the averaged tail, k … 1
    t_j = tail[:, j - 1]
    h = t_j / (s + 1).to(x.dtype)
    z_prev = torch.where(j >= 2, z[:, (j - 2).clamp_min(0)], torch.full_like(h, math.inf))
    # The condition holds at s = k−1 (z₀ = ∞), so argmax finds the first s that satisfies it.
    first = (z_prev > h).to(torch.uint8).argmax(dim=1, keepdim=True)
    sq = head_sq[:, j - 1] + t_j * h
    return sq.gather(1, first).squeeze(1).clamp_min(0).sqrt()


class KSupportNormBall(VectorKConstraintSet):
    """The k-support norm ball ``conv{v : ‖v‖₀ ≤ k, ‖v‖₂ ≤ r}``.

    LMO: ``v = −r·top_k(g)/‖top_k(g)‖₂`` keeping the signed values of the ``k`` entries of largest
    magnitude, so ``⟨g, v⟩ = −r·‖top_k(g)‖₂``. L2 diameter ``D = 2r``; gauge :func:`k_support_norm`.
    At ``k = n`` this is the L2 ball of radius ``r``. On CPU float32 the LMO runs the compiled kernel of
    :mod:`slimtrain.fw.native` (ties at the threshold go to the lowest indices).

    Args:
        n: the number of entries.
        k: the sparsity of a vertex, ``1 ≤ k ≤ n`` (use :func:`resolve_k` for fractions).
        radius: the radius ``r``.
    """

    name = "k_support"

    def diameter_factor(self) -> float:
        """``D/r = 2``."""
        return 2.0

    def gauge_batch(self, x: Tensor) -> Tensor:
        """The k-support norm per row."""
        return k_support_norm(x, self.k)

    def lmo_rows(self, grads: Tensor, radii: Tensor) -> Tensor:
        """Batched LMO (see the class docstring)."""
        if self.k == self.shape[0]:
            vals, idx = grads, None
        elif native.supports(grads):
            return native.top_magnitude_lmo(grads, radii, self.k, "k_support")
        else:
            idx = top_magnitude_indices(grads, self.k)
            vals = grads.gather(1, idx)
        # The norm of vals / max|vals|: in float32 ‖vals‖ itself overflows from |g| ≈ 1e19 on.
        top = vals.abs().amax(dim=1, keepdim=True).clamp_min(torch.finfo(grads.dtype).tiny)
        vals = vals / top
        vals = vals * (-radii / torch.linalg.vector_norm(vals, dim=1, keepdim=True).clamp_min(1.0))
        return vals if idx is None else torch.zeros_like(grads).scatter_(1, idx, vals)


class GroupKSupportNormBall(KConstraintSet):
    """The group k-support ball: the k-support ball of the vector of group (filter) L2 norms.

    The input is a flat vector made of consecutive groups of sizes ``group_sizes`` (a conv weight of
    shape ``(c_out, …)`` flattened: one group per output filter; in global mode the filters of several
    convs concatenated). With ``a_f = ‖g_f‖₂`` and ``S`` the ``k`` groups of largest ``a_f``,
    the LMO is ``v_f = −r·g_f/sqrt(Σ_{f∈S} a_f²)`` on ``S`` and 0 elsewhere
    (docs/sfw.md#constraint-sets-and-their-lmos). ``D = 2r``.

    Args:
        group_sizes: the size of every group, in order.
        k: the number of non-zero groups of a vertex, ``1 ≤ k ≤ len(group_sizes)``.
        radius: the radius ``r``.
        select: ``"topk"`` (default, corrected): exactly ``k`` groups, ties broken by index;
            ``"kthvalue"`` (faithful to the reference code): every group with norm ≥ the k-th largest,
            which selects more than ``k`` on ties and then leaves the set slightly
            (docs/sfw.md#faithful-and-corrected-behaviour).
    """

    name = "group_k_support"

    def __init__(
        self,
        group_sizes: Sequence[int],
        k: int,
        radius: float,
        select: Literal["topk", "kthvalue"] = "topk",
    ) -> None:
        sizes = [int(s) for s in group_sizes]
        if not sizes or min(sizes) < 1:
            raise ValueError(f"GroupKSupportNormBall: group sizes must be positive, got {sizes[:8]}…")
        super().__init__((sum(sizes),), radius)
        self.group_sizes = sizes
        self.k = check_k("GroupKSupportNormBall", k, len(sizes))
        if select not in ("topk", "kthvalue"):
            raise ValueError(f"GroupKSupportNormBall: select must be 'topk' or 'kthvalue', got {select!r}")
        self.select = select
        self._uniform = len(set(sizes)) == 1
        self._index: dict[torch.device, Tensor] = {}

    @classmethod
    def for_filters(cls, shape: Sequence[int], k: int, radius: float, **kwargs: Any) -> GroupKSupportNormBall:
        """The set for one conv weight of shape ``(c_out, c_in, kh, kw)``: one group per output filter."""
        c_out = int(shape[0])
        return cls([math.prod(shape[1:])] * c_out, k, radius, **kwargs)

    @property
    def k_max(self) -> int:
        """The number of groups."""
        return len(self.group_sizes)

    def config(self) -> dict[str, Any]:
        """Constructor arguments."""
        return {
            "group_sizes": list(self.group_sizes),
            "k": self.k,
            "radius": self.radius,
            "select": self.select,
        }

    def diameter_factor(self) -> float:
        """``D/r = 2``."""
        return 2.0

    def group_norms_sq(self, x: Tensor) -> Tensor:
        """Squared L2 norm of every group, shape ``(b, n_groups)``."""
        if self._uniform:
            return (x * x).view(x.shape[0], self.k_max, -1).sum(dim=2)
        out = x.new_zeros(x.shape[0], self.k_max)
        return out.index_add_(1, self._group_index(x.device), x * x)

    def gauge_batch(self, x: Tensor) -> Tensor:
        """The k-support norm of the group norms, per row."""
        return k_support_norm(self.group_norms_sq(x).sqrt(), self.k)

    def lmo_rows(self, grads: Tensor, radii: Tensor) -> Tensor:
        """Batched LMO (see the class docstring)."""
        a_sq = self.group_norms_sq(grads)
        if self.select == "topk":
            # A stable sort breaks ties by group index, so exactly k groups are chosen on every rank.
            idx = a_sq.sort(dim=1, descending=True, stable=True).indices[:, : self.k]
            mask = torch.zeros_like(a_sq, dtype=torch.bool).scatter_(1, idx, True)
        else:
            threshold = a_sq.kthvalue(self.k_max - self.k + 1, dim=1, keepdim=True).values
            mask = a_sq >= threshold
        denom = (a_sq * mask).sum(dim=1, keepdim=True).sqrt().clamp_min(torch.finfo(grads.dtype).tiny)
        scale = torch.where(mask, -radii / denom, 0.0)
        return grads * self._expand(scale)

    def _expand(self, per_group: Tensor) -> Tensor:
        if self._uniform:
            return per_group.repeat_interleave(self.group_sizes[0], dim=1)
        return per_group[:, self._group_index(per_group.device)]

    def _group_index(self, device: torch.device) -> Tensor:
        if device not in self._index:
            sizes = torch.tensor(self.group_sizes, device=device)
            self._index[device] = torch.repeat_interleave(torch.arange(self.k_max, device=device), sizes)
        return self._index[device]

"""Spectral sets on matricised weights: nuclear ball, spectral K-sparse polytope, spectral k-support ball.

Zimmer, Spiegel, Pokutta, arXiv:2205.11921 (docs/sfw.md#constraint-sets-and-their-lmos). A conv weight ``W``
of shape ``(c_out, c_in, kh, kw)`` is handled as ``mat(W)`` of shape ``(c_out, c_in·kh·kw)``; the working
shape of these sets is that matrix.

The LMOs need the top ``k`` singular triplets of the gradient. ``solver="exact"`` obtains them from one
batched symmetric eigendecomposition (in float64) of ``G·Gᵀ`` or ``Gᵀ·G``, whichever is smaller; this is
exact, unlike the reference code's default randomized power method, which can fall short when the top
singular values nearly tie. ``solver="power"`` is a randomized block power (subspace) iteration with a
seeded start (the same on every rank and every call), followed by an exact SVD inside the found subspace.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import Tensor

from slimtrain.fw.base import ConstraintSet, KConstraintSet, check_k
from slimtrain.fw.ksupport import k_support_norm

__all__ = ["NuclearNormBall", "SpectralKSparsePolytope", "SpectralKSupportNormBall", "top_k_singular"]

SpectralSolver = Literal["exact", "power"]


def top_k_singular(
    g: Tensor, k: int, solver: SpectralSolver = "exact", power_iters: int = 10, seed: int = 0
) -> tuple[Tensor, Tensor, Tensor]:
    """Top ``k`` singular triplets of each matrix of a batch.

    Args:
        g: shape ``(b, m, n)``.
        k: the number of triplets, ``1 ≤ k ≤ min(m, n)``.
        solver: ``"exact"`` (batched float64 eigendecomposition of the smaller Gram matrix) or
            ``"power"`` (randomized block power iteration with ``power_iters`` rounds, seeded by ``seed``).
        power_iters: rounds of the power iteration.
        seed: seed of the power iteration's random start.

    Returns:
        ``(U, S, Vh)`` of shapes ``(b, m, k)``, ``(b, k)``, ``(b, k, n)`` in the dtype of ``g``, singular
        values in descending order; ``U·diag(S)·Vh`` is the best rank-``k`` approximation (exact solver).
        Directions whose singular value is 0 have zero vectors.
    """
    transpose = g.shape[1] > g.shape[2]
    a = g.transpose(1, 2) if transpose else g  # (b, m', n') with m' ≤ n'
    if solver == "exact":
        a64 = a.double()
        q = torch.linalg.eigh(a64 @ a64.transpose(1, 2)).eigenvectors[:, :, -k:].flip(2)
        w = q.transpose(1, 2) @ a64  # rows σ_i·v_iᵀ
    elif solver == "power":
        gen = torch.Generator(device=a.device).manual_seed(seed)
        omega = torch.randn(a.shape[0], a.shape[2], k, generator=gen, device=a.device, dtype=a.dtype)
        q = torch.linalg.qr(a @ omega).Q
        for _ in range(power_iters):
            q = torch.linalg.qr(a @ (a.transpose(1, 2) @ q)).Q
        # Exact SVD inside the found k-dimensional subspace.
        uw, _, vh = torch.linalg.svd(q.transpose(1, 2) @ a, full_matrices=False)
        q = q @ uw
        w = q.transpose(1, 2) @ a
    else:
        raise ValueError(f"unknown spectral solver {solver!r}; use 'exact' or 'power'")
    s = torch.linalg.vector_norm(w, dim=2)
    vh = w / s.unsqueeze(2).clamp_min(torch.finfo(w.dtype).tiny)
    u, s, vh = q.to(g.dtype), s.to(g.dtype), vh.to(g.dtype)
    if transpose:
        return vh.transpose(1, 2), s, u.transpose(1, 2)
    return u, s, vh


class _SpectralSet(ConstraintSet):
    """Machinery shared by the spectral sets: matrix shape and the top-k solver."""

    def __init__(
        self, rows: int, cols: int, radius: float, solver: SpectralSolver, power_iters: int, seed: int
    ) -> None:
        super().__init__((rows, cols), radius)
        if solver not in ("exact", "power"):
            raise ValueError(f"{type(self).__name__}: solver must be 'exact' or 'power', got {solver!r}")
        if power_iters < 1:
            raise ValueError(f"{type(self).__name__}: power_iters must be ≥ 1, got {power_iters}")
        self.solver = solver
        self.power_iters = int(power_iters)
        self.seed = int(seed)

    @property
    def rank_max(self) -> int:
        return min(self.shape)

    def _solver_config(self) -> dict[str, Any]:
        return {"solver": self.solver, "power_iters": self.power_iters, "seed": self.seed}

    def _top(self, grads: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
        return top_k_singular(grads, k, self.solver, self.power_iters, self.seed)


class _SpectralKSet(_SpectralSet, KConstraintSet):
    """A spectral set with an integer rank ``k`` (arguments of :class:`SpectralKSupportNormBall`)."""

    def __init__(
        self,
        rows: int,
        cols: int,
        k: int,
        radius: float,
        solver: SpectralSolver = "exact",
        power_iters: int = 10,
        seed: int = 0,
    ) -> None:
        super().__init__(rows, cols, radius, solver, power_iters, seed)
        self.k = check_k(type(self).__name__, k, min(rows, cols))

    @property
    def k_max(self) -> int:
        """``min(rows, cols)``."""
        return self.rank_max

    def config(self) -> dict[str, Any]:
        """Constructor arguments."""
        rows, cols = self.shape
        return {"rows": rows, "cols": cols, "k": self.k, "radius": self.radius, **self._solver_config()}


class SpectralKSupportNormBall(_SpectralKSet):
    """The spectral k-support ball: k-support norm of the singular values ``≤ r``.

    LMO: ``v = −r·G_k/‖G_k‖_F`` with ``G_k`` the best rank-``k`` approximation of ``G``, so
    ``⟨G, v⟩ = −r·‖σ_{1:k}(G)‖₂``. ``D = 2r``. At ``k = min(rows, cols)`` it is the Frobenius ball.

    Args:
        rows: matrix rows (``c_out`` of a conv).
        cols: matrix columns (``c_in·kh·kw`` of a conv).
        k: the rank of a vertex, ``1 ≤ k ≤ min(rows, cols)``.
        radius: the radius ``r``.
        solver: ``"exact"`` (default) or ``"power"``; see :func:`top_k_singular`.
        power_iters: rounds of the power iteration (reference: 10).
        seed: seed of the power iteration's start.
    """

    name = "spectral_k_support"

    def diameter_factor(self) -> float:
        """``D/r = 2``."""
        return 2.0

    def gauge_batch(self, x: Tensor) -> Tensor:
        """The k-support norm of the singular values, per matrix."""
        return k_support_norm(torch.linalg.svdvals(x), self.k)

    def lmo_rows(self, grads: Tensor, radii: Tensor) -> Tensor:
        """Batched LMO (see the class docstring)."""
        u, s, vh = self._top(grads, self.k)
        g_k = u @ (s.unsqueeze(2) * vh)
        norms = torch.linalg.vector_norm(g_k, dim=(1, 2)).clamp_min(torch.finfo(grads.dtype).tiny)
        return g_k * (-radii / norms.view(-1, 1, 1))


class SpectralKSparsePolytope(_SpectralKSet):
    """The spectral K-sparse polytope: ``{X : σ₁(X) ≤ r, ‖X‖_* ≤ k·r}``.

    LMO: ``v = −r·U_k·V_kᵀ`` from the top-``k`` SVD of ``G``, so ``⟨G, v⟩ = −r·Σ_{i≤k} σ_i(G)``.
    Gauge ``max(σ₁, Σσ_i/k)``; ``D = 2r√k``. Arguments as for :class:`SpectralKSupportNormBall`.
    """

    name = "spectral_k_sparse"

    def diameter_factor(self) -> float:
        """``D/r = 2√k``."""
        return 2.0 * math.sqrt(self.k)

    def gauge_batch(self, x: Tensor) -> Tensor:
        """``max(σ₁, Σσ_i/k)`` per matrix."""
        s = torch.linalg.svdvals(x)
        return torch.maximum(s[:, 0], s.sum(dim=1) / self.k)

    def lmo_rows(self, grads: Tensor, radii: Tensor) -> Tensor:
        """Batched LMO (see the class docstring)."""
        u, _, vh = self._top(grads, self.k)
        return (u @ vh) * -radii


class NuclearNormBall(_SpectralSet):
    """The nuclear-norm ball ``{X : ‖X‖_* ≤ r}``.

    LMO: ``v = −r·u₁v₁ᵀ`` from the top singular pair of ``G``, so ``⟨G, v⟩ = −r·σ₁(G)``. ``D = 2r``.
    Arguments as for :class:`SpectralKSupportNormBall` without ``k``.
    """

    name = "nuclear"

    def __init__(
        self,
        rows: int,
        cols: int,
        radius: float,
        solver: SpectralSolver = "exact",
        power_iters: int = 20,
        seed: int = 0,
    ) -> None:
        super().__init__(rows, cols, radius, solver, power_iters, seed)

    def config(self) -> dict[str, Any]:
        """Constructor arguments."""
        rows, cols = self.shape
        return {"rows": rows, "cols": cols, "radius": self.radius, **self._solver_config()}

    def diameter_factor(self) -> float:
        """``D/r = 2``."""
        return 2.0

    def gauge_batch(self, x: Tensor) -> Tensor:
        """The nuclear norm per matrix."""
        return torch.linalg.svdvals(x).sum(dim=1)

    def lmo_rows(self, grads: Tensor, radii: Tensor) -> Tensor:
        """Batched LMO (see the class docstring)."""
        u, _, vh = self._top(grads, 1)
        return (u @ vh) * -radii

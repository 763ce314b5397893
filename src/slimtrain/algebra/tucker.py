"""Tucker-format tensor algebra: unfoldings, mode products, truncated HOSVD.

Used by the factorized layers, the rank-adaptive integrator and post-training Tucker decomposition.
Unfolding convention (Kolda & Bader, SIAM Review 51(3), 2009, with the remaining axes in their order):
``Mat_i(T)`` moves axis ``i`` to the front and reshapes to ``n_i × ∏_{j≠i} n_j``; ``Ten_i`` is its inverse
and ``T ×_i A = Ten_i(A · Mat_i(T))``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def unfold(tensor: Tensor, mode: int) -> Tensor:
    """Mode-``mode`` unfolding ``Mat_mode(tensor)`` of shape ``n_mode × ∏_{j≠mode} n_j``."""
    return tensor.movedim(mode, 0).reshape(tensor.shape[mode], -1)


def fold(matrix: Tensor, mode: int, shape: Sequence[int]) -> Tensor:
    """Inverse of :func:`unfold`: ``Ten_mode(matrix)`` for a tensor of the given full ``shape``."""
    moved = [shape[mode], *[s for j, s in enumerate(shape) if j != mode]]
    return matrix.reshape(moved).movedim(0, mode)


def mode_product(tensor: Tensor, matrix: Tensor, mode: int) -> Tensor:
    """Mode product ``tensor ×_mode matrix`` (``matrix`` has ``tensor.shape[mode]`` columns)."""
    shape = list(tensor.shape)
    shape[mode] = matrix.shape[0]
    return fold(matrix @ unfold(tensor, mode), mode, shape)


def multi_mode_product(tensor: Tensor, matrices: dict[int, Tensor]) -> Tensor:
    """Apply ``tensor ×_i matrices[i]`` for every mode ``i`` in ``matrices``."""
    for mode, matrix in matrices.items():
        tensor = mode_product(tensor, matrix, mode)
    return tensor


def tucker_to_tensor(core: Tensor, factors: Sequence[Tensor]) -> Tensor:
    """Full tensor ``core ×_1 U_1 ×_2 U_2 … ×_d U_d``."""
    return multi_mode_product(core, dict(enumerate(factors)))


def complete_orthonormal(basis: Tensor, width: int) -> Tensor:
    """Extend an orthonormal ``n × k`` basis to ``width`` orthonormal columns (the first ``k`` kept).

    Used where a rank lower bound asks for more directions than a matrix's numerical rank provides; the
    added columns are an arbitrary orthonormal complement (Householder QR of ``[basis | I]``).
    """
    n, k = basis.shape
    if width <= k:
        return basis[:, :width]
    if width > n:
        raise ValueError(f"cannot complete a basis of R^{n} to {width} orthonormal columns")
    eye = torch.eye(n, dtype=basis.dtype, device=basis.device)
    q, _ = torch.linalg.qr(torch.cat([basis, eye], dim=1), mode="complete")
    # QR may flip the signs of the first k columns; keep the given basis verbatim.
    return torch.cat([basis, q[:, k:width]], dim=1)


def leading_left_singular_vectors(matrix: Tensor, rank: int) -> Tensor:
    """The ``rank`` leading left singular vectors of ``matrix`` (orthonormally completed if needed)."""
    u, _, _ = torch.linalg.svd(matrix, full_matrices=False)
    return complete_orthonormal(u[:, :rank], rank)


def hosvd(tensor: Tensor, ranks: Sequence[int | None]) -> tuple[Tensor, list[Tensor | None]]:
    """Truncated higher-order SVD (De Lathauwer et al., SIAM J. Matrix Anal. Appl. 21(4), 2000).

    Args:
        tensor: The tensor to factorize.
        ranks: One rank per mode; ``None`` leaves that mode as it is (no factor).

    Returns:
        ``(core, factors)`` with ``U_i`` the leading left singular vectors of ``Mat_i(tensor)`` (``None`` for
        a mode left as it is) and ``core = tensor ×_i U_iᵀ``; exact when every rank equals the mode's size.
    """
    factors = [
        None if r is None else leading_left_singular_vectors(unfold(tensor, i), r)
        for i, r in enumerate(ranks)
    ]
    core = multi_mode_product(tensor, {i: u.T for i, u in enumerate(factors) if u is not None})
    return core, factors


def rank_from_singular_values(
    singular_values: Tensor, threshold: float, *, faithful_dlrt_net: bool = False, fallback: int = 0
) -> int:
    """Smallest ρ with ``sqrt(Σ_{j>ρ} σ_j²) ≤ threshold`` (docs/tdlrt.md#truncation-and-rank-bounds).

    Args:
        singular_values: Non-increasing singular values.
        threshold: Absolute threshold ϑ.
        faithful_dlrt_net: Reproduce the DLRT-Net rule (docs/tdlrt.md#the-integrator): ρ is scanned over ``0 …
        count − 2`` only,
            the tail ``σ_{ρ:count−1}`` omits the last singular value, the comparison is strict, and when no ρ
            qualifies ``fallback`` is returned. The corrected default counts every discarded value and ρ may
            reach 0.
        fallback: Rank returned by the faithful rule when no ρ qualifies (the old rank).
    """
    sq = singular_values.double() ** 2
    if faithful_dlrt_net:
        count = sq.numel()
        # The scan stops before the empty tail, which would always qualify and make the fallback unreachable.
        for rho in range(count - 1):
            if float(sq[rho : count - 1].sum().sqrt()) < threshold:
                return rho
        return fallback
    # tails[ρ] = sqrt(Σ_{j≥ρ} σ_j²) for ρ = 0..k, tails[k] = 0 (0-based: discarding indices ≥ ρ).
    tails = torch.cat([sq.flip(0).cumsum(0).flip(0), sq.new_zeros(1)]).sqrt()
    return int(torch.nonzero(tails <= threshold)[0, 0])

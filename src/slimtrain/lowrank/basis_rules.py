"""The augmentation of a basis by the rank-adaptive BUG integrator (its truncation rank: algebra.tucker).

Zangrando et al., arXiv:2305.19059 (TDLRT); Schotthöfer et al., arXiv:2205.13571 (DLRT); docs/tdlrt.md.
"""

from __future__ import annotations

import torch
from torch import Tensor


def orthonormal_augmentation(
    basis: Tensor, gradient: Tensor, max_new: int, *, select: str = "svd"
) -> tuple[Tensor, Tensor]:
    """Augment an orthonormal basis with at most ``max_new`` gradient directions (docs/tdlrt.md).

    Args:
        basis: Orthonormal ``U`` of shape ``n × r``.
        gradient: ``G`` of shape ``n × m`` (e.g. ``∇_U L``).
        max_new: Most columns to add (``r̂ − r``).
        select: ``"svd"`` (corrected default): the leading left singular vectors of ``(I − UUᵀ)G``,
            numerically zero directions dropped; with nothing to add the basis is returned unchanged.
            ``"qr_columns"`` (faithful RobustDLRT behaviour): the first ``r + max_new`` columns of the
            Householder QR of ``[U | −G]``, taken even when nothing is added (then ``Ũ = U·D`` with ``D`` a
            diagonal of column signs).

    Returns:
        ``(augmented, transport)``: ``Ũ`` with orthonormal columns spanning ``U`` and the new directions,
        and ``M = ŨᵀU`` (``r̂ × r``), so that ``Ũ M = U`` exactly in exact arithmetic.
    """
    n, r = basis.shape
    max_new = max(0, min(max_new, n - r))
    if select == "qr_columns":
        # RobustDLRT runs this QR at its augmentation cap too: the column signs it flips reach Adam's
        # second-moment transport (sqrt, rotate, square), so the faithful mode must flip them as well.
        q, _ = torch.linalg.qr(torch.cat([basis, -gradient], dim=1))
        augmented = q[:, : r + max_new]
    elif select == "svd":
        if max_new == 0:
            return basis, torch.eye(r, dtype=basis.dtype, device=basis.device)
        # Project twice: one projection loses orthogonality when G is nearly inside span(U).
        projected = gradient - basis @ (basis.T @ gradient)
        projected = projected - basis @ (basis.T @ projected)
        u, s, _ = torch.linalg.svd(projected, full_matrices=False)
        scale = torch.linalg.matrix_norm(gradient, ord=2) if gradient.numel() else s.new_zeros(())
        cutoff = max(n, gradient.shape[1]) * torch.finfo(s.dtype).eps * float(scale)
        keep = min(max_new, int((s > cutoff).sum()))
        if keep == 0:
            return basis, torch.eye(r, dtype=basis.dtype, device=basis.device)
        q, _ = torch.linalg.qr(torch.cat([basis, u[:, :keep]], dim=1))
        augmented = q
    else:
        raise ValueError(f"unknown augmentation selection {select!r}; use 'svd' or 'qr_columns'")
    # M = ŨᵀU absorbs the column signs that QR may flip (never a plain zero padding).
    return augmented, augmented.T @ basis

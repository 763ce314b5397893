"""Hard-threshold projection onto an ℓ₀ ball, the pruning copy of NN-BCD (docs/nnbcd.md).

``H_s(W)`` keeps the (1 − s) fraction of entries of largest magnitude. The default ``"topk"`` rule keeps
exactly ``n − ⌊s·n⌋`` entries (ties broken by the lower flat index), which is the exact Euclidean
projection onto ``{‖W̃‖₀ ≤ (1 − s)n}``. The reference code's ``"quantile"`` rule zeroes every entry with
``W² < quantile(W², s)``; its count can differ by one and ``torch.quantile`` limits the tensor size.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

ThresholdRule = Literal["topk", "quantile"]


def kept_count(numel: int, sparsity: float) -> int:
    """Number of entries kept by the exact rule: ``n − ⌊s·n⌋``.

    Args:
        numel: Number of entries n.
        sparsity: Fraction s ∈ [0, 1) to remove.

    Returns:
        The number of entries kept.
    """
    return numel - math.floor(sparsity * numel)


def hard_threshold(weight: torch.Tensor, sparsity: float, rule: ThresholdRule = "topk") -> torch.Tensor:
    """Return ``H_s(weight)``: a new tensor with all but the largest-magnitude entries set to zero.

    Args:
        weight: Tensor to project (not modified).
        sparsity: Fraction s ∈ [0, 1) of entries to zero.
        rule: ``"topk"`` (exact count, default) or ``"quantile"`` (the reference code's rule).

    Returns:
        The thresholded copy.

    Raises:
        ValueError: If ``sparsity`` is outside [0, 1) or the rule is unknown.
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must lie in [0, 1), got {sparsity}")
    if rule == "topk":
        flat = weight.reshape(-1)
        keep = kept_count(flat.numel(), sparsity)
        # Stable descending sort: among equal magnitudes the lower index is kept.
        order = torch.argsort(flat.abs(), descending=True, stable=True)
        mask = torch.zeros_like(flat, dtype=torch.bool)
        mask[order[:keep]] = True
        return torch.where(mask, flat, torch.zeros_like(flat)).reshape(weight.shape)
    if rule == "quantile":
        squared = weight**2
        threshold = torch.quantile(squared.reshape(-1), sparsity)
        return torch.where(squared < threshold, torch.zeros_like(weight), weight)
    raise ValueError(f"unknown threshold rule {rule!r}; use 'topk' or 'quantile'")

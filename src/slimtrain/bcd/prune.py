"""Hard-threshold projection onto an ℓ₀ ball, the pruning copy of NN-BCD (docs/nnbcd.md).

``H_s(W)`` keeps the (1 − s) fraction of entries of largest magnitude, selected by the sparsity core
(:mod:`slimtrain.pruning.selection`). The default ``"topk"`` rule keeps exactly ``n − ⌊s·n⌋`` entries (ties
broken by keeping the lower flat index: the core's tie rule ``"last"``), which is the exact Euclidean
projection onto ``{‖W̃‖₀ ≤ (1 − s)n}``. The reference code's ``"quantile"`` rule (the core's
``"below_quantile"`` on W²) zeroes every entry with ``W² < quantile(W², s)``; its count can differ by one and
``torch.quantile`` limits the tensor size.
"""

from __future__ import annotations

from typing import Literal

import torch

from slimtrain.pruning.scores import magnitude_scores
from slimtrain.pruning.selection import removal_count, removal_masks, smallest_k_mask

ThresholdRule = Literal["topk", "quantile"]


def kept_count(numel: int, sparsity: float) -> int:
    """Number of entries kept by the exact rule: ``n − ⌊s·n⌋`` (⌊s·n⌋ computed exactly).

    Args:
        numel: Number of entries n.
        sparsity: Fraction s ∈ [0, 1) to remove.

    Returns:
        The number of entries kept.
    """
    return numel - removal_count(numel, sparsity)


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
        scores = magnitude_scores({"weight": weight})
        removed = smallest_k_mask(scores, weight.numel() - kept_count(weight.numel(), sparsity), ties="last")
    elif rule == "quantile":
        removed = removal_masks({"weight": weight.detach() ** 2}, sparsity, rule="below_quantile")["weight"]
    else:
        raise ValueError(f"unknown threshold rule {rule!r}; use 'topk' or 'quantile'")
    return torch.where(removed.view(weight.shape), torch.zeros_like(weight), weight)

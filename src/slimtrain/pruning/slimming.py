"""Network-slimming penalty on BatchNorm scales, in the smooth-L1 form of the SWD reference code.

Liu et al., "Learning Efficient Convolutional Networks through Network Slimming", ICCV 2017;
docs/swd.md#baselines.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

__all__ = ["slimming_penalty", "smooth_l1_gamma"]


def smooth_l1_gamma(gamma: Tensor, sign_bug: bool = False) -> Tensor:
    """Elementwise h(γ) = γ² for |γ| ≤ 1 and |γ| for |γ| > 1.

    Args:
        gamma: BatchNorm scales.
        sign_bug: Faithful reference behaviour (docs/swd.md#corrected-defaults-and-faithful-flags,
        ``liu_sign_bug``): use γ instead of |γ| above 1,
            which rewards large negative scales. The default (False) is the corrected, even function.

    Returns:
        h applied elementwise, differentiable with respect to ``gamma``.
    """
    linear = gamma if sign_bug else gamma.abs()
    return torch.where(gamma.abs() <= 1, gamma * gamma, linear)


def slimming_penalty(gammas: Iterable[Tensor], coefficient: float, sign_bug: bool = False) -> Tensor:
    """coefficient·Σ h(γ) over all given scales, to be added to the loss.

    The reference multiplies its ``fix_a`` (λ) by the weight decay μ; pass ``coefficient = μ·λ`` to match it,
    or Liu et al.'s L1 strength directly.

    Args:
        gammas: BatchNorm weight tensors of the prunable channels.
        coefficient: Strength of the penalty.
        sign_bug: See :func:`smooth_l1_gamma`.

    Returns:
        A scalar tensor.

    Raises:
        ValueError: If no tensor is given.
    """
    terms = [smooth_l1_gamma(g, sign_bug).sum() for g in gammas]
    if not terms:
        raise ValueError("slimming_penalty needs at least one BatchNorm scale tensor")
    return coefficient * torch.stack(terms).sum()

"""Penalties of the baselines: the training-time terms that the compared methods add to SGD.

- SFW's structured baselines (docs/sfw.md#baseline-penalties): group lasso on conv filters and the
  nuclear-norm penalty, added to the loss, and singular-value soft-thresholding, the proximal step of
  Prox-SGD. All act on the weights of (non-transposed) conv layers, matricised as ``mat(W)`` of shape
  ``(c_out, c_in·kh·kw)``.
- Network slimming (Liu et al., "Learning Efficient Convolutional Networks through Network Slimming", ICCV
  2017; docs/swd.md#baselines): the penalty on BatchNorm scales, in the smooth-L1 form of the SWD reference
  code.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from slimtrain.layers.prunable import is_trainable, refuse_computed
from slimtrain.pruning.scores import group_norm_scores

__all__ = [
    "conv_weights",
    "group_lasso_penalty",
    "nuclear_norm_penalty",
    "singular_value_soft_threshold_",
    "slimming_penalty",
    "smooth_l1_gamma",
]


def conv_weights(model: nn.Module) -> list[Tensor]:
    """The trainable weights of every non-transposed conv layer of ``model``, in module order.

    A frozen weight (``requires_grad=False``) is left out: the baselines neither penalise nor threshold it.
    """
    return [
        m.weight
        for m in model.modules()
        if isinstance(m, nn.modules.conv._ConvNd)
        and not m.transposed
        and m.weight is not None
        and is_trainable(
            m, "weight"
        )  # a parametrized weight under no_grad reads as frozen: ask its originals
    ]


def group_lasso_penalty(model: nn.Module, strength: float) -> Tensor:
    """``λ·Σ_layers Σ_f ‖W_f‖₂`` over the output filters of every conv weight (differentiable).

    Raises:
        ValueError: if the model has no conv layer.
    """
    weights = _require_convs(model, "group_lasso_penalty")
    return strength * sum(group_norm_scores(w, dim=0, ord=2).sum() for w in weights)


def nuclear_norm_penalty(model: nn.Module, strength: float) -> Tensor:
    """``λ·Σ_conv ‖mat(W)‖_*``, differentiated through the full SVD (its gradient is ``U·Vᵀ``).

    Raises:
        ValueError: if the model has no conv layer.
    """
    weights = _require_convs(model, "nuclear_norm_penalty")
    return strength * sum(torch.linalg.matrix_norm(w.flatten(1), ord="nuc") for w in weights)


@torch.no_grad()
def singular_value_soft_threshold_(model: nn.Module, threshold: float) -> None:
    """Prox-SGD step: ``mat(W) ← U·diag(max(σ − threshold, 0))·Vᵀ`` for every conv weight, in place.

    Call it after each SGD step with ``threshold = λ·η_t``. Uses ``torch.linalg.svd`` (which returns ``Vᵀ``;
    the reference code's fallbacks mistook ``torch.svd``'s ``V`` for it).

    Raises:
        ValueError: if the model has no conv layer or ``threshold < 0``.
        UnsupportedModelError: if a prunable weight is computed (a parametrization or a pruning mask).
    """
    if threshold < 0:
        raise ValueError(f"singular_value_soft_threshold_: threshold must be ≥ 0, got {threshold}")
    # The step writes the weights in place: a computed one (weight_norm) would absorb nothing.
    refuse_computed(model, "singular_value_soft_threshold_ (prox-svd)")
    for w in _require_convs(model, "singular_value_soft_threshold_"):
        u, s, vh = torch.linalg.svd(w.flatten(1), full_matrices=False)
        w.copy_(((u * (s - threshold).clamp_min(0)) @ vh).view_as(w))


def _require_convs(model: nn.Module, who: str) -> list[Tensor]:
    weights = conv_weights(model)
    if not weights:
        raise ValueError(f"{who}: {type(model).__name__} has no conv layer")
    return weights


def smooth_l1_gamma(gamma: Tensor, sign_bug: bool = False) -> Tensor:
    """Elementwise h(γ) = γ² for |γ| ≤ 1 and |γ| for |γ| > 1.

    Args:
        gamma: BatchNorm scales.
        sign_bug: Faithful reference behaviour (docs/swd.md#corrected-defaults-and-faithful-flags,
            ``liu_sign_bug``): use γ instead of |γ| above 1, which rewards large negative scales. The default
            (False) is the corrected, even function.

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

"""Penalty and proximal operators of the baselines SFW is compared with (docs/sfw.md#baseline-penalties).

Group lasso on conv filters and the nuclear-norm penalty are added to the loss of an SGD run;
singular-value soft-thresholding is the proximal step of Prox-SGD. All act on the weights of
(non-transposed) conv layers, matricised as ``mat(W)`` of shape ``(c_out, c_in·kh·kw)``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["conv_weights", "group_lasso_penalty", "nuclear_norm_penalty", "singular_value_soft_threshold_"]


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
        and m.weight.requires_grad
    ]


def group_lasso_penalty(model: nn.Module, strength: float) -> Tensor:
    """``λ·Σ_layers Σ_f ‖W_f‖₂`` over the output filters of every conv weight (differentiable).

    Raises:
        ValueError: if the model has no conv layer.
    """
    weights = _require_convs(model, "group_lasso_penalty")
    return strength * sum(torch.linalg.vector_norm(w.flatten(1), dim=1).sum() for w in weights)


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
    """
    if threshold < 0:
        raise ValueError(f"singular_value_soft_threshold_: threshold must be ≥ 0, got {threshold}")
    for w in _require_convs(model, "singular_value_soft_threshold_"):
        u, s, vh = torch.linalg.svd(w.flatten(1), full_matrices=False)
        w.copy_(((u * (s - threshold).clamp_min(0)) @ vh).view_as(w))


def _require_convs(model: nn.Module, who: str) -> list[Tensor]:
    weights = conv_weights(model)
    if not weights:
        raise ValueError(f"{who}: {type(model).__name__} has no conv layer")
    return weights

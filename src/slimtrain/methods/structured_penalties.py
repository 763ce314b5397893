"""SGD baselines of structured SFW: group lasso, nuclear-norm penalty, proximal SGD (docs/sfw.md).

Zimmer, Spiegel, Pokutta (arXiv:2205.11921) compare group k-support SFW with SGD + a group-lasso filter
penalty, and spectral k-support SFW with SGD + a nuclear-norm penalty and with proximal SGD
(singular-value soft-thresholding after each step). Each trains with the recipe's optimizer (weight
decay included, as the recipe says) and is compressed after training with the structure it targets.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from slimtrain.pruning.baselines import (
    conv_weights,
    group_lasso_penalty,
    nuclear_norm_penalty,
    singular_value_soft_threshold_,
)
from slimtrain.train.method import Method, StepContext, register_method

__all__ = ["GroupLassoTraining", "NuclearNormTraining", "PenaltyOptions", "ProximalSVDTraining"]


class PenaltyOptions(BaseModel):
    """Options of the penalty baselines.

    Attributes:
        strength: λ, the weight of the penalty (or of the proximal threshold ``λ·η_t``).
    """

    model_config = ConfigDict(extra="forbid")

    strength: float = Field(1e-4, ge=0.0)


class _ConvPenaltyMethod(Method):
    """Base of the baselines that act on conv weights: a model without convs is refused before training."""

    def prepare(self, model: nn.Module) -> nn.Module:
        """Return ``model`` unchanged after checking it has a conv layer to act on.

        Raises:
            ValueError: the model has no conv layer.
        """
        if not conv_weights(model):
            raise ValueError(
                f"{type(model).__name__} has no conv layer for the '{self.name}' baseline to act on"
            )
        return model


@register_method
class GroupLassoTraining(_ConvPenaltyMethod):
    """SGD with the group-lasso penalty ``λ·Σ_conv Σ_f ‖W_f‖₂`` on conv filters; L1 filter pruning after."""

    name = "group-lasso"
    Options = PenaltyOptions
    structures = ("filter",)

    def penalty(self, model: nn.Module) -> torch.Tensor:
        """The group-lasso term added to the cross-entropy."""
        return group_lasso_penalty(model, self.options.strength)


@register_method
class NuclearNormTraining(_ConvPenaltyMethod):
    """SGD with the nuclear-norm penalty ``λ·Σ_conv ‖mat(W)‖_*`` (through the SVD); SVD truncation after.

    The penalty's gradient needs one SVD per conv layer and step, the cost the paper contrasts with SFW.
    """

    name = "nuclear-norm"
    Options = PenaltyOptions
    structures = ("lowrank",)

    def penalty(self, model: nn.Module) -> torch.Tensor:
        """The nuclear-norm term added to the cross-entropy."""
        return nuclear_norm_penalty(model, self.options.strength)


@register_method
class ProximalSVDTraining(_ConvPenaltyMethod):
    """Proximal SGD: after each SGD step, ``mat(W) ← U·diag(max(σ − λ·η_t, 0))·Vᵀ`` for every conv weight.

    η_t is the learning rate of the step just taken (schedule included). Corrected behaviour: the released
    ``Prox_SGD`` does not run and mistakes ``torch.svd``'s V for Vᵀ
    (docs/sfw.md#faithful-and-corrected-behaviour); this uses ``torch.linalg.svd``.
    """

    name = "prox-svd"
    Options = PenaltyOptions
    structures = ("lowrank",)

    def after_optimizer_step(self, model: nn.Module, ctx: StepContext) -> None:
        """Soft-threshold the singular values of every conv weight by ``λ·η_t``."""
        assert self.optimizer is not None
        lr = float(self.optimizer.param_groups[0]["lr"])
        singular_value_soft_threshold_(model, self.options.strength * lr)

    def describe(self, model: nn.Module) -> dict[str, Any]:
        """``mean_rank_fraction``: mean over convs of #(σ > 1e-6·σ₁) / min(c_out, c_in·kh·kw)."""
        fractions = []
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, nn.modules.conv._ConvNd) and not m.transposed:
                    s = torch.linalg.svdvals(m.weight.flatten(1))
                    fractions.append(float((s > 1e-6 * s[0]).sum()) / s.numel() if s[0] > 0 else 0.0)
        return {"mean_rank_fraction": sum(fractions) / len(fractions)} if fractions else {}

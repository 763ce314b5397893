"""Network slimming (Liu et al.): smooth-L1 on BatchNorm scales, budget pruning, masked fine-tuning.

Liu et al., "Learning Efficient Convolutional Networks through Network Slimming", ICCV 2017;
docs/swd.md#baselines. Up to ``prune_at`` (a fraction of the run's steps) the loss carries λ·Σ h(γ) over the
gate BatchNorms (h(γ) = γ² for |γ| ≤ 1, |γ| above); then the channels are pruned with SWD's parameter-budget
bisection (same gates, same analytic count, docs/swd.md#structured-swd-and-the-parameter-budget) and the rest
of the run fine-tunes with γ, β of the removed channels and their adjacent conv slices held at zero (the
masked equivalent of removing the channels).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from slimtrain.methods.masked import (
    MaskedTrainingMethod,
    fraction_to_permille,
    gamma_channel_masks,
    phase_step,
)
from slimtrain.pruning import slimming_penalty
from slimtrain.swd import ChannelModelName, parameter_budget
from slimtrain.swd.budget import refuse_unreachable
from slimtrain.train.method import StepContext, StepOutput, register_method

__all__ = ["NetworkSlimming", "NetworkSlimmingOptions"]


class NetworkSlimmingOptions(BaseModel):
    """Options of ``network-slimming``.

    Attributes:
        target: Fraction of the model's parameters removed (budget ⌊(1 − target)·N_total⌋), in [0, 1).
        strength: λ of the penalty (Liu et al.: 1e-5 for ResNets, 1e-4 for VGG on CIFAR). The reference code
            uses μ·fix_a: pass that product here to match it.
        prune_at: Fraction of the run's steps trained with the penalty before pruning.
        sign_bug: The reference's h(γ) = γ instead of |γ| for |γ| > 1 (faithful; default corrected).
        bisection: ``corrected`` or ``reference`` (see :class:`slimtrain.swd.ChannelSelection`).
        channel_model: ``groups`` (default: DepGraph's coupled channel groups holding a BatchNorm,
            counted as the export removes them) or ``reference`` (the SWD reference's traced gates and
            analytic count),
            for ``granularity: channels`` (docs/swd.md#structured-swd-and-the-parameter-budget).
    """

    model_config = ConfigDict(extra="forbid")

    target: float = Field(0.5, ge=0.0, lt=1.0)
    strength: float = Field(1e-5, ge=0.0)
    prune_at: float = Field(0.5, ge=0.0, lt=1.0)
    sign_bug: bool = False
    bisection: Literal["corrected", "reference"] = "corrected"
    channel_model: ChannelModelName = "groups"
    # Runs stored before the option existed gated the fx tracer's BatchNorms (see with_legacy_options).
    legacy_defaults: ClassVar[dict[str, Any]] = {"channel_model": "reference"}


@register_method
class NetworkSlimming(MaskedTrainingMethod):
    """Structured baseline of structured SWD, on the same channel model (a model with BatchNorm gates)."""

    name = "network-slimming"
    Options = NetworkSlimmingOptions
    structures = ("filter",)

    def prepare(self, model: nn.Module) -> nn.Module:
        """Build the channel model once (the gates of structured SWD)."""
        self.channel_graph = self.build_channel_model(model)
        refuse_unreachable(self.channel_graph, model, fraction_to_permille(self.options.target))
        return model

    def penalty(self, model: nn.Module) -> Tensor | None:
        """λ·Σ h(γ) over the gates until the pruning step, nothing afterwards."""
        if self.stage > 0:
            return None
        assert self.channel_graph is not None, "prepare must run before training"
        gammas = [model.get_submodule(g).weight for g in self.channel_graph.gates]
        return slimming_penalty(gammas, self.options.strength, sign_bug=self.options.sign_bug)

    def _prune(self, model: nn.Module) -> None:
        masks = gamma_channel_masks(model, self.options.target, self.options.bisection, self.channel_graph)
        self.set_masks(model, masks)
        self.stage = 1

    def training_step(
        self, model: nn.Module, inputs: Tensor, targets: Tensor, ctx: StepContext
    ) -> StepOutput:
        """Prune at ``prune_at``, then one ordinary step (with the penalty before pruning)."""
        if self.stage == 0 and ctx.step >= phase_step(self.options.prune_at, ctx.total_steps):
            self._prune(model)
        return super().training_step(model, inputs, targets, ctx)

    def finalize(self, model: nn.Module) -> None:
        """Prune if the run stopped before ``prune_at`` (``max_steps``)."""
        if self.stage == 0:
            self._prune(model)

    def params_budget(self, model: nn.Module) -> int | None:
        """The budget ⌊(1 − target)·N_total⌋ the pruning meets by the analytic count."""
        return parameter_budget(model, fraction_to_permille(self.options.target))

"""Gradual magnitude pruning with the cubic sparsity schedule (Zhu & Gupta).

Zhu & Gupta, "To prune, or not to prune: exploring the efficacy of pruning for model compression",
arXiv:1710.01878. The sparsity rises from 0 at ``begin`` to the target at ``end`` (fractions of the run's
steps) along s_t = s_f·(1 − (t − t_0)/(t_end − t_0))³ complemented, updating the masks every ``frequency``
steps; training continues with the masks held until the end of the recipe's epochs (equal total epochs).
One global magnitude threshold over conv and linear weights, as for SWD and ``magnitude-ft`` (Zhu & Gupta
prune each layer to the same sparsity; the global rule keeps the comparison on one population rule).
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor, nn

from slimtrain.methods.masked import (
    Granularity,
    MaskedTrainingMethod,
    fraction_to_permille,
    phase_step,
    pruning_masks,
)
from slimtrain.pruning import cubic_sparsity
from slimtrain.swd import ChannelModelName, parameter_budget
from slimtrain.train.method import StepContext, StepOutput, register_method

__all__ = ["GradualMagnitudePruning", "GradualPruningOptions"]


class GradualPruningOptions(BaseModel):
    """Options of ``gmp``.

    Attributes:
        target: Final fraction removed, in [0, 1): of the conv and linear weights (of all parameters with
            ``granularity: channels``).
        begin: Fraction of the run's steps before the first pruning.
        end: Fraction of the run's steps at which the target is reached (the rest fine-tunes).
        frequency: Steps between mask updates (Δt).
        granularity: ``weights`` (default) or ``channels`` (see
            :func:`slimtrain.methods.masked.pruning_masks`).
        channel_model: ``groups`` (default: DepGraph's coupled channel groups holding a BatchNorm,
            counted as the export removes them) or ``reference`` (the SWD reference's traced gates and
            analytic count),
            for ``granularity: channels`` (docs/swd.md#structured-swd-and-the-parameter-budget).
    """

    model_config = ConfigDict(extra="forbid")

    target: float = Field(0.9, ge=0.0, lt=1.0)
    begin: float = Field(0.1, ge=0.0, lt=1.0)
    end: float = Field(0.7, gt=0.0, le=1.0)
    frequency: int = Field(10, ge=1)
    granularity: Granularity = "weights"
    channel_model: ChannelModelName = "groups"
    # Runs stored before the option existed gated the fx tracer's BatchNorms (see with_legacy_options).
    legacy_defaults: ClassVar[dict[str, Any]] = {"channel_model": "reference"}

    @model_validator(mode="after")
    def _ordered(self) -> GradualPruningOptions:
        if self.end <= self.begin:
            raise ValueError(f"end ({self.end}) must exceed begin ({self.begin})")
        return self


@register_method
class GradualMagnitudePruning(MaskedTrainingMethod):
    """Masks recomputed from the magnitudes along the cubic schedule; exactly ⌊target·n⌋ zeros at the end.

    :attr:`stage` counts the mask updates done; a resumed run recomputes the schedule from the global step.
    """

    name = "gmp"
    Options = GradualPruningOptions

    def __init__(self, options: BaseModel, recipe: Any) -> None:
        super().__init__(options, recipe)
        self.sparsity = 0.0

    def sparsity_at(self, step: int, total_steps: int) -> float:
        """The scheduled sparsity at ``step`` of a run of ``total_steps``."""
        begin = phase_step(self.options.begin, total_steps)
        end = max(begin + 1, phase_step(self.options.end, total_steps))
        return cubic_sparsity(step, self.options.target, begin, end, 0.0, self.options.frequency)

    def training_step(
        self, model: nn.Module, inputs: Tensor, targets: Tensor, ctx: StepContext
    ) -> StepOutput:
        """Update the masks when the schedule's sparsity rises, then one ordinary step."""
        sparsity = self.sparsity_at(ctx.step, ctx.total_steps)
        if sparsity > self.sparsity:
            self.set_masks(model, pruning_masks(model, self.granularity, sparsity, graph=self.channel_graph))
            self.stage += 1
            self.sparsity = sparsity
        return super().training_step(model, inputs, targets, ctx)

    def state_dict(self) -> dict[str, Any]:
        """Masks, number of updates and the sparsity reached."""
        return {**super().state_dict(), "sparsity": self.sparsity}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        """Restore masks, updates and sparsity reached."""
        super().load_state_dict(state, model)
        self.sparsity = float(state.get("sparsity", 0.0))

    def finalize(self, model: nn.Module) -> None:
        """Prune to the target if the run stopped before the schedule's end (``max_steps``)."""
        if self.sparsity < self.options.target:
            masks = pruning_masks(model, self.granularity, self.options.target, graph=self.channel_graph)
            self.set_masks(model, masks)
            self.sparsity = self.options.target

    def params_budget(self, model: nn.Module) -> int | None:
        """``granularity: channels``: structured SWD's budget ⌊(1 − target)·N_total⌋; else ``None``."""
        if self.granularity != "channels":
            return None
        return parameter_budget(model, fraction_to_permille(self.options.target))

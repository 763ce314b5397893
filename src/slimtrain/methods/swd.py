"""Selective Weight Decay as training methods: ``swd`` (unstructured) and ``swd-structured`` (channels).

Tessier et al., "Continuous Pruning of Deep Convolutional Networks Using Selective Weight Decay",
arXiv:2011.10520; docs/swd.md#method-details and #baselines. The target is fixed during training (one training
per level): every step penalises the weights that pruning to the target now would remove, with a strength a
that grows exponentially from ``a_min`` to ``a_max`` over the run's steps; the run ends with a hard pruning at
the target and no fine-tuning. The ordinary weight decay μ is the recipe's optimizer ``weight_decay``; it also
scales the SWD term (docs/swd.md#objective-and-selection).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from slimtrain._model_io import logits_of
from slimtrain.methods.masked import fraction_to_permille
from slimtrain.swd import (
    ChannelGraph,
    ChannelModelName,
    ChannelSelection,
    GroupGates,
    MagnitudeSelection,
    SelectiveWeightDecay,
    build_channel_model,
    parameter_budget,
    prune_to_target,
)
from slimtrain.swd.budget import refuse_unreachable
from slimtrain.swd.selection import Selection
from slimtrain.train.method import (
    Method,
    StepContext,
    StepOutput,
    full_precision,
    register_method,
    trainable_parameters,
)

__all__ = [
    "SWDOptions",
    "SelectiveWeightDecayMethod",
    "StructuredSWDMethod",
    "StructuredSWDOptions",
    "fraction_to_permille",
]


class SWDOptions(BaseModel):
    """Options of ``swd``.

    Attributes:
        target: Fraction of the population removed at the end, in [0, 1) (the level; 0.99 keeps 1 %).
        a_min: a at the first step (reference 0.1).
        a_max: a at the end of the run (reference 1e5).
        mu: μ scaling the SWD term; ``null`` takes the optimizer's ``weight_decay`` (the reference's rule;
            set it when the optimizer runs without weight decay, like the reference ``--mu``).
        population: ``weights`` (corrected default: conv and linear weights are counted, penalised and
            pruned) or ``reference`` (faithful: threshold over parameters whose name lacks "bn", mask on
            every parameter).
        decoupled: Shrink the selected weights multiplicatively after each step instead of adding the
            gradient (stable for any η·μ·a; not the reference's method).
    """

    model_config = ConfigDict(extra="forbid")

    target: float = Field(0.9, ge=0.0, lt=1.0)
    a_min: float = Field(0.1, gt=0.0)
    a_max: float = Field(1e5, gt=0.0)
    mu: float | None = Field(None, ge=0.0)
    population: Literal["weights", "reference"] = "weights"
    decoupled: bool = False

    @model_validator(mode="after")
    def _a_range(self) -> SWDOptions:
        if self.a_max < self.a_min:
            raise ValueError(f"a_max ({self.a_max}) must be >= a_min ({self.a_min})")
        return self


class StructuredSWDOptions(SWDOptions):
    """Options of ``swd-structured`` (``target`` is the fraction of *parameters* removed, via the budget).

    Attributes:
        penalize_filters: Also penalise the conv slices adjacent to gated-off channels (reference
            ``structuredF``).
        bisection: ``corrected`` (smallest threshold meeting the budget) or ``reference``.
        gate_compare: ``ge`` (count as the mask) or ``gt`` (the reference's mixed rule).
        channel_model: ``groups`` (default: DepGraph's coupled channel groups holding a BatchNorm,
            counted as the export removes them) or ``reference`` (the SWD reference's traced gates and
            analytic count),
            for ``granularity: channels`` (docs/swd.md#structured-swd-and-the-parameter-budget).
    """

    population: Literal["weights"] = "weights"
    penalize_filters: bool = False
    bisection: Literal["corrected", "reference"] = "corrected"
    gate_compare: Literal["ge", "gt"] = "ge"
    channel_model: ChannelModelName = "groups"
    # Runs stored before the option existed gated the fx tracer's BatchNorms (see with_legacy_options).
    legacy_defaults: ClassVar[dict[str, Any]] = {"channel_model": "reference"}


class _SWDBase(Method):
    """Shared training loop of both SWD methods; subclasses say what is selected."""

    levels_chosen = "during_training"
    level_option = "target"

    def __init__(self, options: BaseModel, recipe: Any) -> None:
        super().__init__(options, recipe)
        self.selection: Selection | None = None
        self.swd: SelectiveWeightDecay | None = None
        self.step_count = 0

    def _mu(self) -> float:
        mu = self.options.mu
        return float(self.recipe.optimizer.weight_decay if mu is None else mu)

    def build_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        """The recipe's optimizer (ordinary weight decay μ on every parameter); also checked for stability."""
        optimizer = super().build_optimizer(model)
        if self.swd is not None:
            self.swd.optimizer = optimizer
        return optimizer

    def _regularizer(self, total_steps: int) -> SelectiveWeightDecay:
        if self.swd is None or self.swd.schedule.total_steps != total_steps:
            assert self.selection is not None, "prepare must run before training"
            self.swd = SelectiveWeightDecay(
                self.selection,
                weight_decay=self._mu(),
                total_steps=total_steps,
                a_min=self.options.a_min,
                a_max=self.options.a_max,
                optimizer=self.optimizer,
            )
        return self.swd

    def training_step(
        self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, ctx: StepContext
    ) -> StepOutput:
        """One SGD step on cross-entropy plus ½·μ·a_t·Σ_selected w² (selection from the current weights)."""
        assert self.optimizer is not None, "build_optimizer must run before training_step"
        swd = self._regularizer(ctx.total_steps)
        # a_t is a function of the global step only, so a resumed run continues the same schedule.
        swd.step_count = ctx.step
        self.optimizer.zero_grad(set_to_none=True)
        with ctx.autocast():
            logits = logits_of(model(inputs))
        loss = nn.functional.cross_entropy(full_precision(logits), targets)
        ctx.backward(loss, trainable_parameters(model))
        if self.options.decoupled:
            ctx.step_optimizer(self.optimizer)
            swd.shrink_(model, float(self.optimizer.param_groups[0]["lr"]))
        else:
            # Added after the gradient average (it is computed from weights identical on every rank) and to
            # unscaled gradients (fp16).
            ctx.unscale_(self.optimizer)
            swd.apply_(model)
            ctx.step_optimizer(self.optimizer)
        self.step_count = ctx.step + 1
        return StepOutput(loss=loss.detach(), logits=logits.detach(), extras={"swd_a": swd.a})

    def finalize(self, model: nn.Module) -> None:
        """Hard pruning at the target by the training rule, without fine-tuning or BN recalibration."""
        assert self.selection is not None
        prune_to_target(model, self._final_selection(model))

    def _final_selection(self, model: nn.Module) -> Selection:
        assert self.selection is not None
        return self.selection

    def describe(self, model: nn.Module) -> dict[str, Any]:
        """The current a (docs/swd.md#diagnostics)."""
        return {"swd_a": self.swd.a if self.swd is not None else self.options.a_min}

    def state_dict(self) -> dict[str, Any]:
        """The global step reached; a_t is recomputed from it."""
        return {"step_count": self.step_count}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        """Restore the step reached."""
        self.step_count = int(state.get("step_count", 0))

    def compress(
        self, model: nn.Module, structure: str, level: float, example_inputs: torch.Tensor
    ) -> nn.Module:
        """The trained model is already pruned at its target: every structure evaluates it as it is."""
        return model


@register_method
class SelectiveWeightDecayMethod(_SWDBase):
    """Unstructured SWD: one global magnitude threshold over the population, recomputed every step.

    At the end exactly ⌊target·n⌋ weights of the population (conv and linear weights by default) are zero.
    """

    name = "swd"
    Options = SWDOptions
    structures = ("unstructured",)

    def prepare(self, model: nn.Module) -> nn.Module:
        """Set up the magnitude selection at the target (the model is unchanged)."""
        self.selection = MagnitudeSelection(
            fraction_to_permille(self.options.target), population=self.options.population
        )
        return model


@register_method
class StructuredSWDMethod(_SWDBase):
    """Structured SWD: channels gated by BatchNorm γ (and β), under a parameter budget (docs/swd.md).

    Gates are DepGraph's coupled channel groups holding a BatchNorm (``channel_model: groups``, default) or
    the reference's traced gates (``reference``: needs a BatchNorm after every residual addition, e.g.
    ``resnet20`` with ``bn_after_add: true, shortcut: B``). The final pruning zeroes γ and β of the
    gated-off channels and the layer slices adjacent to them (which changes nothing in the function); the
    parameter count of the channel model is then at most ⌊(1 − target)·N_total⌋ (for ``groups``, the count
    the export reaches).
    """

    name = "swd-structured"
    Options = StructuredSWDOptions
    structures = ("filter",)

    def prepare(self, model: nn.Module) -> nn.Module:
        """Build the model's channel model (gates, parameter count) once, from :attr:`example_inputs`."""
        self.channel_model: ChannelGraph | GroupGates = build_channel_model(
            model, self.options.channel_model, self.example_inputs, f"method '{self.name}'"
        )
        self.selection = self._channel_selection(model, self.options.penalize_filters)
        # Before training, not at the final pruning: the unreachable part does not depend on γ.
        refuse_unreachable(
            self.channel_model, model, fraction_to_permille(self.options.target), self.options.gate_compare
        )
        return model

    def _channel_selection(self, model: nn.Module, penalize_filters: bool) -> ChannelSelection:
        return ChannelSelection(
            model,
            fraction_to_permille(self.options.target),
            penalize_filters=penalize_filters,
            bisection=self.options.bisection,
            gate_compare=self.options.gate_compare,
            graph=self.channel_model,
        )

    def _final_selection(self, model: nn.Module) -> Selection:
        return self._channel_selection(model, penalize_filters=True)

    def params_budget(self, model: nn.Module) -> int | None:
        """The budget ⌊(1 − target)·N_total⌋ the final pruning meets by the analytic count."""
        return parameter_budget(model, fraction_to_permille(self.options.target))

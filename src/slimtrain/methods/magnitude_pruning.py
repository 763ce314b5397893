"""Magnitude pruning with fine-tuning (Han et al.) and learning-rate rewinding (Renda et al.).

Han et al., "Learning both Weights and Connections for Efficient Neural Networks", NeurIPS 2015; Renda et al.,
"Comparing Rewinding and Fine-tuning in Neural Network Pruning", ICLR 2020; docs/swd.md#baselines.

Inside the recipe's epoch budget: dense training up to ``prune_at`` (a fraction of the run's steps), then k
prune/fine-tune iterations of equal length filling the rest of the run. Iteration i removes, with one global
magnitude threshold over conv and linear weights, ⌊(i+1)·K/k⌋ weights in total, K = ⌊target·n⌋, and fine-tunes
with the pruned entries held at zero. Fine-tuning either continues the recipe's learning-rate schedule
(``magnitude-ft``, the reference's behaviour) or replays the whole schedule, from the initial learning rate,
compressed into each fine-tuning iteration (``lr-rewinding``).
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from slimtrain.methods.masked import (
    Granularity,
    MaskedTrainingMethod,
    fraction_to_permille,
    phase_step,
    pruning_masks,
)
from slimtrain.swd import ChannelModelName, parameter_budget
from slimtrain.train.method import StepContext, StepOutput, register_method
from slimtrain.train.schedule import LRSchedule

__all__ = ["LRRewinding", "LRRewindingOptions", "MagnitudePruningFineTune", "MagnitudePruningOptions"]


class MagnitudePruningOptions(BaseModel):
    """Options of ``magnitude-ft``.

    Attributes:
        target: Fraction removed at the end, in [0, 1): of the conv and linear weights (of all parameters
            with ``granularity: channels``).
        prune_at: Fraction of the run's steps trained dense before the first pruning, in [0, 1).
        iterations: k, the number of prune/fine-tune iterations (1: one-shot).
        rewind_lr: Replay the learning-rate schedule from its start in every fine-tuning iteration.
        granularity: ``weights`` (default) or ``channels`` (see
            :func:`slimtrain.methods.masked.pruning_masks`).
        channel_model: ``groups`` (default: DepGraph's coupled channel groups holding a BatchNorm,
            counted as the export removes them) or ``reference`` (the SWD reference's traced gates and
            analytic count),
            for ``granularity: channels`` (docs/swd.md#structured-swd-and-the-parameter-budget).
    """

    model_config = ConfigDict(extra="forbid")

    target: float = Field(0.9, ge=0.0, lt=1.0)
    prune_at: float = Field(0.5, ge=0.0, lt=1.0)
    iterations: int = Field(1, ge=1)
    rewind_lr: bool = False
    granularity: Granularity = "weights"
    channel_model: ChannelModelName = "groups"
    # Runs stored before the option existed gated the fx tracer's BatchNorms (see with_legacy_options).
    legacy_defaults: ClassVar[dict[str, Any]] = {"channel_model": "reference"}


class LRRewindingOptions(MagnitudePruningOptions):
    """Options of ``lr-rewinding``: those of ``magnitude-ft`` with ``rewind_lr`` on by default."""

    rewind_lr: bool = True


@register_method
class MagnitudePruningFineTune(MaskedTrainingMethod):
    """Dense training, then k global magnitude pruning + masked fine-tuning iterations, at equal epochs.

    Ends with exactly ⌊target·n⌋ conv and linear weights at zero (``granularity: channels``: whole channels
    removed to the parameter budget). With ``iterations: 1`` and the default options this is "SGD +
    magnitude pruning with retraining".
    """

    name = "magnitude-ft"
    Options = MagnitudePruningOptions

    def prune_steps(self, total_steps: int) -> list[int]:
        """The step at which each of the k pruning iterations starts."""
        start = phase_step(self.options.prune_at, total_steps)
        k = self.options.iterations
        return [start + i * (total_steps - start) // k for i in range(k)]

    def _prune(self, model: nn.Module, stage: int) -> None:
        opts = self.options
        self.set_masks(
            model,
            pruning_masks(
                model, self.granularity, opts.target, stage, opts.iterations, graph=self.channel_graph
            ),
        )
        self.stage = stage

    def training_step(
        self, model: nn.Module, inputs: Tensor, targets: Tensor, ctx: StepContext
    ) -> StepOutput:
        """Prune when an iteration starts, then one ordinary step (at the rate of :meth:`lr_factor`)."""
        starts = self.prune_steps(ctx.total_steps)
        stage = sum(1 for s in starts if s <= ctx.step)
        if stage > self.stage:
            self._prune(model, stage)
        return super().training_step(model, inputs, targets, ctx)

    def lr_factor(self, step: int, scheduled: float) -> float:
        """With ``rewind_lr``, from the first pruning on: the schedule replayed inside each iteration.

        The recipe's schedule is compressed into the fine-tuning iteration holding ``step``: its position is
        the fraction of the iteration done, so warm-up, milestones and the cosine shape are replayed from the
        initial learning rate. Otherwise (and outside training) the recipe's ``scheduled`` factor.
        """
        total = self.total_steps
        if not self.options.rewind_lr or total is None:
            return scheduled
        starts = self.prune_steps(total)
        stage = sum(1 for s in starts if s <= step)
        if stage == 0:
            return scheduled
        begin = starts[stage - 1]
        end = starts[stage] if stage < len(starts) else total
        schedule = LRSchedule(self.recipe.schedule, total / self.recipe.train.epochs, total)
        return schedule.factor((step - begin) * total // max(1, end - begin))

    def finalize(self, model: nn.Module) -> None:
        """Prune to the target if the run stopped before the last iteration (``max_steps``)."""
        if self.stage < self.options.iterations:
            self._prune(model, self.options.iterations)

    def params_budget(self, model: nn.Module) -> int | None:
        """``granularity: channels``: structured SWD's budget ⌊(1 − target)·N_total⌋; else ``None``."""
        if self.granularity != "channels":
            return None
        return parameter_budget(model, fraction_to_permille(self.options.target))


@register_method
class LRRewinding(MagnitudePruningFineTune):
    """Magnitude pruning whose fine-tuning replays the LR schedule from its start (Renda et al.)."""

    name = "lr-rewinding"
    Options = LRRewindingOptions

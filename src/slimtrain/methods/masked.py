"""Base of the pruning baselines: keep masks held on the model, re-applied after every step, checkpointed.

The baselines of docs/swd.md#baselines prune at chosen steps and fine-tune with the pruned entries held at
zero (masked fine-tuning, Han et al. 2015). Every baseline trains for the recipe's ``train.epochs`` in total:
its pruning and fine-tuning phases are positions inside that budget (fractions of the run's steps), so a
comparison with SWD is at equal total epochs.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from slimtrain.errors import RecipeError
from slimtrain.layers.prunable import refuse_computed
from slimtrain.pruning import MaskSet, removal_count, smallest_magnitude_masks
from slimtrain.swd import ChannelGraph, ChannelModelName, ChannelSelection, GroupGates, population_weights
from slimtrain.swd.budget import Bisection, refuse_unreachable
from slimtrain.swd.structured import build_channel_model
from slimtrain.train.method import Method

__all__ = [
    "Granularity",
    "MaskedTrainingMethod",
    "fraction_to_permille",
    "gamma_channel_masks",
    "magnitude_masks",
    "phase_step",
    "pruning_masks",
]

Granularity = Literal["weights", "channels"]


def phase_step(fraction: float, total_steps: int) -> int:
    """The step at ``fraction`` of the run (rounded down), the same on every rank and after a resume."""
    return int(fraction * total_steps)


def magnitude_masks(model: nn.Module, sparsity: float, stage: int = 1, stages: int = 1) -> dict[str, Tensor]:
    """Global magnitude keep masks over the prunable weights (one threshold, ties broken by position).

    The population is SWD's (:func:`slimtrain.swd.population_weights`, docs/metrics.md#populations): conv,
    linear, RNN and attention input weights; a parametrized weight is refused, as masks are held in place.

    Removes exactly ⌊stage·K/stages⌋ weights, K = ⌊sparsity·n⌋ (Han's cumulative targets,
    docs/swd.md#baselines; the defaults remove K). Entries already pruned are zero, hence among the smallest:
    cumulative pruning never revives them.
    """
    refuse_computed(model, "masked fine-tuning")
    weights = population_weights(model)
    n = sum(w.numel() for w in weights.values())
    return smallest_magnitude_masks(weights, stage * removal_count(n, sparsity) // stages)


def fraction_to_permille(fraction: float) -> float:
    """A removed fraction (0.995) as a per-mille target of :mod:`slimtrain.swd` (995), exactly."""
    return float(Fraction(repr(float(fraction))) * 1000)


def gamma_channel_masks(
    model: nn.Module,
    fraction: float,
    bisection: Bisection = "corrected",
    graph: ChannelGraph | GroupGates | None = None,
    *,
    channel_model: ChannelModelName = "groups",
    example_inputs: Any = None,
) -> dict[str, Tensor]:
    """Keep masks that remove whole channels to a parameter budget, ranked by BatchNorm ``|γ|``.

    The channel model, the budget ⌊(1 − fraction)·N_total⌋ and the bisection are those of structured SWD
    (docs/swd.md#structured-swd-and-the-parameter-budget); γ, β of a removed channel and the layer slices
    reading or writing it are masked. Channels already pruned have γ = 0, so a larger ``fraction`` removes a
    superset of them. ``graph``: the model's channel model if already built (default: built here from
    ``channel_model`` and ``example_inputs``, see :class:`~slimtrain.swd.ChannelSelection`).

    Raises:
        ValueError: if the model has no BatchNorm gate the channel model can find.
    """
    selection = ChannelSelection(
        model,
        fraction_to_permille(fraction),
        penalize_filters=True,
        bisection=bisection,
        graph=graph,
        channel_model=channel_model,
        example_inputs=example_inputs,
    )
    return {s.name: ~s.removed for s in selection.select(model)}


def pruning_masks(
    model: nn.Module,
    granularity: Granularity,
    fraction: float,
    stage: int = 1,
    stages: int = 1,
    graph: ChannelGraph | GroupGates | None = None,
    *,
    channel_model: ChannelModelName = "groups",
    example_inputs: Any = None,
) -> dict[str, Tensor]:
    """Magnitude keep masks at stage ``stage`` of ``stages`` towards removing ``fraction``.

    ``"weights"``: :func:`magnitude_masks`, one global magnitude threshold over the prunable weights,
    ``fraction`` of those weights. ``"channels"``: :func:`gamma_channel_masks`, whole BatchNorm-gated channels
    ranked by ``|γ|`` with their conv slices, ``stage/stages·fraction`` of *all* parameters (the budget of
    structured SWD; needs a model with BatchNorm gates; ``graph``: its channel model if already built, else
    one of ``channel_model``, traced on ``example_inputs`` for ``"groups"``).
    """
    if granularity == "channels":
        return gamma_channel_masks(
            model,
            fraction * stage / stages,
            graph=graph,
            channel_model=channel_model,
            example_inputs=example_inputs,
        )
    return magnitude_masks(model, fraction, stage, stages)


class MaskedTrainingMethod(Method):
    """A method whose pruned entries are held at zero by masks re-applied after every optimizer step.

    Subclasses call :meth:`set_masks` when they prune; the masks and :attr:`stage` (how far the pruning
    schedule has gone) are checkpointed, so a resumed run holds the same masks and does not prune again.
    Options with ``granularity: channels`` make the method a structured (``filter``) one; their
    ``channel_model`` (``groups``, default, or ``reference``) chooses the channel model
    (:class:`~slimtrain.swd.ChannelSelection`), built by :meth:`prepare` from :attr:`example_inputs`.
    """

    levels_chosen = "during_training"
    level_option = "target"
    structures = ("unstructured",)

    def __init__(self, options: Any, recipe: Any) -> None:
        super().__init__(options, recipe)
        self.granularity: Granularity = getattr(options, "granularity", "weights")
        if self.granularity == "channels":
            self.structures = ("filter",)
        self.masks: dict[str, Tensor] | None = None
        self.channel_graph: ChannelGraph | GroupGates | None = None  # built by prepare (channels)
        self.stage = 0
        self._handle: RemovableHandle | None = None
        self._model: nn.Module | None = None

    def prepare(self, model: nn.Module) -> nn.Module:
        """For ``granularity: channels``: build the channel model once; refuse a model without gates."""
        if self.granularity == "channels":
            try:
                self.channel_graph = self.build_channel_model(model)
                refuse_unreachable(self.channel_graph, model, fraction_to_permille(self.options.target))
            except ValueError as exc:
                raise RecipeError(f"'method.options.granularity': channels: {exc}") from exc
        return model

    def build_channel_model(self, model: nn.Module) -> ChannelGraph | GroupGates:
        """The channel model of the ``channel_model`` option (``groups`` by default).

        ``groups`` traces the model on :attr:`example_inputs`.
        """
        choice: ChannelModelName = getattr(self.options, "channel_model", "groups")
        return build_channel_model(model, choice, self.example_inputs, f"method '{self.name}'")

    def build_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        """The recipe's optimizer, with the current masks (if any) re-applied after each of its steps."""
        optimizer = super().build_optimizer(model)
        self._model = model
        self._attach()
        return optimizer

    def set_masks(self, model: nn.Module, masks: dict[str, Tensor]) -> None:
        """Replace the masks, zero the pruned entries now and keep them zero after every step."""
        self.masks = {name: mask.detach().clone() for name, mask in masks.items()}
        self._model = model
        self._attach()

    def _attach(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        if self.masks is None or self._model is None:
            return
        mask_set = MaskSet(self._model, self.masks)
        mask_set.apply_()
        if self.optimizer is not None:
            self._handle = mask_set.attach(self.optimizer)

    def describe(self, model: nn.Module) -> dict[str, Any]:
        """The fraction of masked-out entries over the masked tensors, and the pruning stage."""
        if not self.masks:
            return {"mask_sparsity": 0.0, "pruning_stage": self.stage}
        total = sum(m.numel() for m in self.masks.values())
        removed = sum(int((~m).sum()) for m in self.masks.values())
        return {"mask_sparsity": removed / total, "pruning_stage": self.stage}

    def state_dict(self) -> dict[str, Any]:
        """The masks (boolean tensors) and the pruning stage reached."""
        return {"stage": self.stage, "masks": dict(self.masks) if self.masks is not None else {}}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        """Restore masks and stage; :meth:`build_optimizer` (run next by the trainer) re-attaches them."""
        self.stage = int(state.get("stage", 0))
        masks = state.get("masks") or {}
        self.masks = {name: mask.to(torch.bool) for name, mask in masks.items()} or None
        self._model = model

    def compress(
        self, model: nn.Module, structure: str, level: float, example_inputs: torch.Tensor
    ) -> nn.Module:
        """The trained model is already pruned at its target: it is evaluated as it is."""
        return model

"""Which weights SWD penalises: the selection protocol and the unstructured magnitude selection.

docs/swd.md#objective-and-selection (Tessier et al., arXiv:2011.10520): the selected weights are those that
pruning the network to the target right now would remove; they are recomputed from the current weights at
every step, with one global threshold, and no gradient flows through the selection.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Literal, NamedTuple, Protocol

from torch import Tensor, nn

from slimtrain.errors import UnsupportedModelError
from slimtrain.layers.prunable import prunable_weights
from slimtrain.pruning.scores import magnitude_scores
from slimtrain.pruning.selection import removal_count, smallest_k_mask, sorted_threshold, split_like

__all__ = [
    "MagnitudeSelection",
    "PenalizedPopulation",
    "Selected",
    "Selection",
    "permille_count",
    "population_weights",
]

PenalizedPopulation = Literal["weights", "reference"]


class Selected(NamedTuple):
    """One penalised tensor and the boolean mask of its selected (to-be-removed) entries.

    ``param`` is a parameter, or the effective value of a computed weight (a ``weight_norm``
    parametrization), named ``"<module>.<name>"`` (:mod:`slimtrain.layers.prunable`).
    """

    name: str
    param: Tensor
    removed: Tensor


class Selection(Protocol):
    """Computes, from the current weights of a model, the entries that pruning at the target would remove."""

    def select(self, model: nn.Module) -> list[Selected]:
        """Selected entries of every penalised parameter of ``model``."""
        ...


def permille_count(n: int, target: float) -> int:
    """⌊(target/1000)·n⌋ computed exactly; ``target`` is per-mille removed (900 = 90% removed).

    Raises:
        ValueError: If ``target`` is outside [0, 1000).
    """
    if not 0 <= target < 1000:
        raise ValueError(f"target is per-mille removed and must lie in [0, 1000), got {target}")
    return removal_count(n, Fraction(repr(float(target))) / 1000)


def population_weights(model: nn.Module) -> dict[str, Tensor]:
    """The prunable weights SWD penalises and prunes, by first name (the corrected population).

    :func:`slimtrain.layers.prunable.prunable_weights` (convolutions, linears, RNN and attention input
    weights, Hugging Face ``Conv1D``): a shared (tied) weight is one member, under its first name
    (docs/metrics.md#shared-parameters), so its entries are counted and selected once. A parametrized weight
    (``weight_norm``) is its effective value: SWD penalises it through the parametrization and the final
    pruning makes it a plain weight (docs/swd.md, :func:`slimtrain.swd.prune_to_target`). Frozen weights
    (``requires_grad=False``) are left out: training methods leave them alone.

    Raises:
        UnsupportedModelError: If the model has no trainable prunable weight.
    """
    weights = prunable_weights(model, trainable_only=True)
    if not weights:
        raise UnsupportedModelError(
            f"{type(model).__name__} has no trainable prunable weight (convolution, linear, RNN or "
            "attention input weight with requires_grad=True)"
        )
    return weights


class MagnitudeSelection:
    """Unstructured selection: the smallest magnitudes under one global threshold.

    Populations (docs/swd.md#objective-and-selection and #corrected-defaults-and-faithful-flags):

    - ``"weights"`` (corrected default): the prunable weights (:func:`population_weights`) count, are
      penalised and pruned; exactly ⌊(target/1000)·n⌋ entries are selected, ties broken by position (model
      order), without sorting.
    - ``"reference"`` (faithful): the threshold is the magnitude at index ⌊(target/1000)·n⌋ of the sorted
      magnitudes of every parameter whose name does not contain ``"bn"``; entries strictly below it are
      selected in **every** parameter, BatchNorm scales and shifts included.

    Args:
        target: Per-mille of weights removed, in [0, 1000).
        population: ``"weights"`` or ``"reference"``.

    Raises:
        ValueError: On an unknown population or a target out of range.
    """

    def __init__(self, target: float, population: PenalizedPopulation = "weights") -> None:
        if population not in ("weights", "reference"):
            raise ValueError(f"population must be 'weights' or 'reference', got {population!r}")
        permille_count(0, target)
        self.target = target
        self.population = population

    def select(self, model: nn.Module) -> list[Selected]:
        """Selected entries of every penalised parameter, from the current magnitudes (detached)."""
        if self.population == "weights":
            weights = population_weights(model)
            scores = magnitude_scores(weights)
            k = permille_count(scores.numel(), self.target)
            # Views of one selection: no per-tensor kernels in this per-step path.
            removed = split_like(smallest_k_mask(scores, k), weights)
            return [Selected(name, w, removed[name]) for name, w in weights.items()]
        # The reference rule of the core: strictly below the sorted value at index ⌊(target/1000)·n⌋ of the
        # counted magnitudes, applied to every parameter.
        params = {name: p for name, p in model.named_parameters() if p.requires_grad}
        counted = {name: p for name, p in params.items() if "bn" not in name}
        if not counted:
            raise UnsupportedModelError(
                f"{type(model).__name__} has no trainable parameter without 'bn' in its name: the reference "
                "population has nothing to count; use population='weights'"
            )
        magnitudes = magnitude_scores(counted)
        threshold = sorted_threshold(magnitudes, permille_count(magnitudes.numel(), self.target))
        return [Selected(name, p, p.detach().abs() < threshold) for name, p in params.items()]

"""Unstructured magnitude pruning: global over a population, or per layer.

Global magnitude pruning over the prunable weights (conv, linear, RNN and attention input weights;
:mod:`slimtrain.layers.prunable`) is the SFW paper's unstructured evaluation; over all parameters (biases and
BatchNorm γ/β included) it is Miao et al.'s (ICLR 2022). Protocol: docs/sfw.md#evaluation-protocol;
populations: docs/metrics.md#populations. Exactly ⌊s·N⌋ entries are removed; ties in magnitude are broken by
position (parameter order, then flat index), so every process computes the same mask. The selection itself
is :mod:`slimtrain.pruning.magnitude`'s, shared with the pruning baselines and SWD.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from slimtrain._materialized import refuse_unmaterialized
from slimtrain._wrappers import unwrap_model
from slimtrain.compress.masks import apply_masks
from slimtrain.errors import BadInputError, UnsupportedModelError
from slimtrain.layers.prunable import prunable_weights
from slimtrain.pruning import magnitude

PopulationName = Literal["prunable", "all"]


def population_parameters(
    model: nn.Module, population: PopulationName = "prunable"
) -> dict[str, torch.Tensor]:
    """Return the named tensors of a population (docs/metrics.md#populations).

    ``prunable`` is :func:`slimtrain.layers.prunable.prunable_weights`: the weights its registry names
    (convolutions, linears, RNN and attention input weights, Hugging Face ``Conv1D``), a shared (tied) tensor
    once under its first name, prunable when any alias is (docs/metrics.md#shared-parameters); its mask holds
    for every alias. A parametrized weight is its effective tensor under ``"<module>.weight"``: pruning it
    (:func:`~slimtrain.compress.apply_masks`) leaves a plain weight in the copy.

    Args:
        model: The model; a wrapped one (``DataParallel``, ``torch.compile``) is read unwrapped.
        population: ``"prunable"`` or ``"all"`` (every parameter).

    Returns:
        Name → tensor, in ``named_parameters`` order, named by the unwrapped model (as masks are).

    Raises:
        BadInputError: An unknown population.
        UnsupportedModelError: A tensor without values (``meta`` device, lazy module), named.
    """
    model = unwrap_model(model)
    refuse_unmaterialized(model, "magnitude pruning")
    if population == "all":
        return dict(model.named_parameters())
    if population != "prunable":
        raise BadInputError(f"population must be 'prunable' or 'all', got {population!r}")
    return prunable_weights(model)


def global_magnitude_masks(
    model: nn.Module, sparsity: float, *, population: PopulationName = "prunable"
) -> dict[str, torch.Tensor]:
    """Masks removing the ⌊sparsity·N⌋ smallest-magnitude entries over the whole population.

    Args:
        model: The model.
        sparsity: Fraction of the population's entries to remove, in [0, 1].
        population: ``"prunable"`` (:func:`population_parameters`; the SFW paper) or ``"all"`` (Miao et al.).

    Returns:
        Parameter name → boolean keep-mask.
    """
    params = population_parameters(model, population)
    if not params:
        raise UnsupportedModelError(
            f"{type(unwrap_model(model)).__qualname__} has no parameters in population {population!r}: "
            "nothing to prune"
        )
    total = sum(p.numel() for p in params.values())
    return magnitude.smallest_magnitude_masks(params, magnitude.removal_count(total, sparsity))


def layerwise_magnitude_masks(
    model: nn.Module, sparsity: float, *, population: PopulationName = "prunable"
) -> dict[str, torch.Tensor]:
    """Masks removing the ⌊sparsity·n⌋ smallest-magnitude entries of each tensor of a population."""
    return magnitude.per_tensor_magnitude_masks(population_parameters(model, population), sparsity)


def global_magnitude_prune(
    model: nn.Module, sparsity: float, *, population: PopulationName = "prunable"
) -> nn.Module:
    """Return a copy of ``model`` pruned by :func:`global_magnitude_masks` (masks folded into the weights)."""
    return apply_masks(model, global_magnitude_masks(model, sparsity, population=population))


def layerwise_magnitude_prune(
    model: nn.Module, sparsity: float, *, population: PopulationName = "prunable"
) -> nn.Module:
    """Return a copy of ``model`` pruned by :func:`layerwise_magnitude_masks` (masks folded in)."""
    return apply_masks(model, layerwise_magnitude_masks(model, sparsity, population=population))

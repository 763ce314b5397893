"""NN-BCD storage fractions CR₁ and CR₂ (docs/metrics.md, docs/nnbcd.md).

NN-BCD's "CR" is a storage fraction (stored / dense, ≤ 1): CR₂ over the compressed (TT) layers only,
CR₁ over all weight layers. TT storage per layer is Σ_k r_{k−1} n_k r_k with capped ranks. Biases are zero
in NN-BCD and are not counted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from torch import nn

from slimtrain.algebra.tt import tt_storage
from slimtrain.layers import TTLinear


@dataclass(frozen=True)
class StorageFractions:
    """Storage fractions of a TT-compressed network.

    Attributes:
        compressed: CR₂ = Σ stored / Σ dense over the compressed layers.
        all: CR₁ = the same over every weight layer (uncompressed layers count densely).
    """

    compressed: float
    all: float


def tt_storage_fractions(
    shapes: Sequence[tuple[int, int]], modes: Mapping[int, Sequence[int]], rank: int
) -> StorageFractions:
    """CR₂ and CR₁ from layer shapes, per-layer TT modes and a uniform rank (hand count).

    Args:
        shapes: (d_out, d_in) of every weight layer, in order.
        modes: Layer index → TT mode tuple for the compressed layers.
        rank: Uniform requested TT rank.

    Returns:
        The two storage fractions.

    Raises:
        ValueError: If a mode tuple does not match its layer size or names a missing layer.
    """
    if not modes:
        raise ValueError("tt_storage_fractions needs at least one compressed layer")
    stored_c = dense_c = stored_all = dense_all = 0
    for index, (rows, cols) in enumerate(shapes):
        dense = rows * cols
        stored = dense
        if index in modes:
            if math.prod(modes[index]) != dense:
                raise ValueError(
                    f"TT modes {tuple(modes[index])} of layer {index} do not multiply to {rows}×{cols}"
                )
            stored = tt_storage(modes[index], rank)
            stored_c += stored
            dense_c += dense
        stored_all += stored
        dense_all += dense
    missing = set(modes) - set(range(len(shapes)))
    if missing:
        raise ValueError(f"TT modes given for layers {sorted(missing)} but there are {len(shapes)} layers")
    return StorageFractions(compressed=stored_c / dense_c, all=stored_all / dense_all)


def module_storage_fractions(module: nn.Module) -> StorageFractions:
    """CR₂ and CR₁ of an exported network: TTLinear layers are the compressed population.

    ``nn.Linear`` and ``nn.Conv2d`` weights count as stored densely (their biases, zero in NN-BCD, are not
    counted); TTLinear layers count their cores.

    Args:
        module: A network containing at least one :class:`~slimtrain.layers.TTLinear`.

    Returns:
        The two storage fractions.

    Raises:
        ValueError: If the network has no TTLinear layer.
    """
    stored_c = dense_c = stored_all = dense_all = 0
    for layer in module.modules():
        if isinstance(layer, TTLinear):
            stored = sum(core.numel() for core in layer.cores)
            dense = layer.in_features * layer.out_features
            stored_c += stored
            dense_c += dense
        elif isinstance(layer, (nn.Linear, nn.Conv2d)):
            stored = dense = layer.weight.numel()
        else:
            continue
        stored_all += stored
        dense_all += dense
    if dense_c == 0:
        raise ValueError("module_storage_fractions found no TTLinear layer in the module")
    return StorageFractions(compressed=stored_c / dense_c, all=stored_all / dense_all)

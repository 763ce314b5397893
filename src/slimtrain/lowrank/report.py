"""Per-layer ranks and the DLRT compression rates of a factorized model (docs/metrics.md, docs/tdlrt.md)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from torch import nn

from slimtrain.layers.factor_base import MatrixFactorizedLayer, TuckerFactorizedLayer
from slimtrain.lowrank.conversion import factorized_layers
from slimtrain.metrics import (
    cr_percent_eval_dlrt_convention,
    cr_percent_eval_factorized_only,
    cr_percent_train_dlrt,
    cr_percent_train_tucker,
)


@dataclass(frozen=True)
class LayerRankReport:
    """Counts of one factorized layer (weights only; the bias is never part of the c.r. counts).

    Attributes:
        name: Module name.
        kind: Class name of the layer.
        ranks: Current multilinear ranks.
        dense_weight_count: ``∏ n_i``, the replaced layer's weight count.
        eval_count: Stored count of the inference model (Tucker ``Σ n_i r_i + ∏ r_i``; matrix ``(n + m) r``).
        train_count_tucker: This project's Tucker training count (U, Ũ, C, C̃, M over all modes).
        train_count_dlrt: DLRT-Net training count ``4(n + m) r + 8 r²`` (matrix layers; ``None`` for Tucker).
        cr_percent_eval: ``100 (1 − eval_count / dense_weight_count)`` of this layer.
        cr_percent_train_tucker: ``100 (1 − train_count_tucker / dense_weight_count)``.
        cr_percent_train_dlrt: ``100 (1 − train_count_dlrt / dense_weight_count)`` (``None`` for Tucker).
    """

    name: str
    kind: str
    ranks: tuple[int, ...]
    dense_weight_count: int
    eval_count: int
    train_count_tucker: int
    train_count_dlrt: int | None
    cr_percent_eval: float
    cr_percent_train_tucker: float
    cr_percent_train_dlrt: float | None


def _layer_report(name: str, layer: TuckerFactorizedLayer, aug_cap: str) -> LayerRankReport:
    dense = layer.dense_parameter_count() - (0 if layer.bias is None else layer.bias.numel())
    evaluated = layer.eval_parameter_count()
    train_tucker = layer.train_parameter_count_tucker(aug_cap)
    train_dlrt = layer.train_parameter_count_dlrt() if isinstance(layer, MatrixFactorizedLayer) else None
    return LayerRankReport(
        name=name,
        kind=type(layer).__name__,
        ranks=layer.ranks,
        dense_weight_count=dense,
        eval_count=evaluated,
        train_count_tucker=train_tucker,
        train_count_dlrt=train_dlrt,
        cr_percent_eval=100.0 * (1.0 - evaluated / dense),
        cr_percent_train_tucker=100.0 * (1.0 - train_tucker / dense),
        cr_percent_train_dlrt=None if train_dlrt is None else 100.0 * (1.0 - train_dlrt / dense),
    )


def lowrank_report(model: nn.Module, *, aug_cap: str = "rmax") -> dict[str, Any]:
    """Ranks and compression rates of every factorized layer and of the model.

    Model-level fields, each computed by its :mod:`slimtrain.metrics` function (docs/metrics.md):

    - ``cr_percent_eval_dlrt_convention``: DLRT-Net convention. Denominator: the weights (no biases) of
      all Conv2d/Linear layers, factorized layers at their dense size; numerator: factorized eval counts
      plus the weights of the dense Conv2d/Linear layers. The ratio is rounded to 3 decimals before the
      conversion to % as in DLRT-Net (its quirk of counting BatchNorm γ in the numerator is not reproduced).
    - ``cr_percent_eval_factorized_only``: RobustDLRT convention, factorized layers only.
    - ``cr_percent_train_dlrt``: DLRT-Net training count, DLRT-Net denominator; ``None`` when a Tucker
      layer is present (the count is defined for matrix layers only).
    - ``cr_percent_train_tucker``: this project's Tucker training count (matrix layers as two-mode Tucker),
      DLRT-Net denominator.

    Args:
        model: The model.
        aug_cap: Augmentation cap used in training (``"rmax"`` or ``"n"``), for the training counts.

    Returns:
        ``{"layers": [LayerRankReport as dict, ...], "ranks_per_layer": {...}, <the four rates>,
        "dense_weights_other": int}``.
    """
    factorized = factorized_layers(model)
    layers = [_layer_report(n, layer, aug_cap) for n, layer in factorized.items()]
    dense_other = sum(
        m.weight.numel()
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.Conv1d, nn.Conv3d))
    )
    full = dense_other + sum(r.dense_weight_count for r in layers)
    tucker = [(m.mode_sizes, m.ranks, m.augmented_ranks(aug_cap)) for m in factorized.values()]
    matrix = [
        (*layer.mode_sizes, max(layer.ranks))
        for layer in factorized.values()
        if isinstance(layer, MatrixFactorizedLayer)
    ]
    return {
        "layers": [asdict(r) for r in layers],
        "ranks_per_layer": {r.name: r.ranks for r in layers},
        "dense_weights_other": dense_other,
        # Weights only: BatchNorm γ is left out of both sides (DLRT-Net counts it in the numerator).
        "cr_percent_eval_dlrt_convention": cr_percent_eval_dlrt_convention(model, count_norm_weights=False)
        if full
        else None,
        "cr_percent_eval_factorized_only": cr_percent_eval_factorized_only(model) if layers else None,
        "cr_percent_train_dlrt": cr_percent_train_dlrt(matrix, dense_other, full)
        if full and len(matrix) == len(layers)
        else None,
        "cr_percent_train_tucker": cr_percent_train_tucker(tucker, dense_other, full) if full else None,
    }

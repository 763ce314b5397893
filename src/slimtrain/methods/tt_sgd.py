"""Baseline: the MLP trained by the recipe's optimizer with tensor-train hidden layers at a fixed rank.

The SGD/Adam counterpart of NN-BCD's TT compression (docs/nnbcd.md#baselines, baseline 3): every hidden linear
layer of the registry's MLP becomes a :class:`~slimtrain.bcd.TTLinear` with the same mode tuples and uniform
capped rank NN-BCD uses (:mod:`slimtrain.methods.tt_layout`), its cores are trainable parameters and the
forward pass goes through 𝒯(G). The cores start as the TT-SVD of the layer's initial weight; biases and the
dense classifier are kept. The level is fixed during training: ``storage_reduction`` (1 − CR₂) or ``rank``.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from slimtrain.algebra.tt import tt_svd_matrix
from slimtrain.layers import TTLinear
from slimtrain.methods.tt_layout import TTLayoutOptions, check_mlp, resolve_tt_layout
from slimtrain.train.method import Method, register_method


@register_method
class TensorTrainSGD(Method):
    """Gradient training (the recipe's optimizer) of an MLP whose hidden layers are TT layers.

    Options: :class:`~slimtrain.methods.tt_layout.TTLayoutOptions`.
    """

    name = "tt-sgd"
    Options = TTLayoutOptions
    levels_chosen = "during_training"
    level_option = "storage_reduction"
    structures = ("lowrank",)  # tensor-train layers

    def prepare(self, model: nn.Module) -> nn.Module:
        """Replace every hidden ``nn.Linear`` by a ``TTLinear`` (TT-SVD of its weight, bias kept)."""
        mlp = check_mlp(model, self.name)
        self.layout = resolve_tt_layout(mlp, self.options)
        for index, modes in self.layout.modes.items():
            linear = mlp.hidden[index]
            cores = tt_svd_matrix(linear.weight.detach(), modes, self.layout.rank).cores
            mlp.hidden[index] = TTLinear(cores, linear.in_features, linear.out_features, bias=linear.bias)
        return mlp

    def describe(self, model: nn.Module) -> dict[str, Any]:
        """The TT rank and CR₂ (storage fraction of the hidden layers' weights)."""
        return {
            "tt_rank": self.layout.rank,
            "storage_fraction_compressed": self.layout.storage_fraction_compressed,
        }

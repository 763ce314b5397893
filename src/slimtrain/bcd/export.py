"""Conversion of NN-BCD results to an ordinary ``nn.Module`` (evaluation network, docs/nnbcd.md)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from slimtrain.bcd.conv_im2col import Im2colConv
from slimtrain.bcd.copies import CompressedCopy


def _dense_linear(weight: torch.Tensor) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=False, dtype=weight.dtype, device=weight.device)
    layer.weight = nn.Parameter(weight.detach().clone())
    return layer


def compressed_network(
    weights: Sequence[torch.Tensor],
    copies: Mapping[int, CompressedCopy],
    conv: Im2colConv | None = None,
) -> nn.Sequential:
    """Build the compressed evaluation network: zero biases, ReLU between layers, linear output.

    Compressed layers use their copy (:class:`~slimtrain.layers.TTLinear` for TT copies, an
    ``nn.Linear`` holding W̃ for pruned ones), never the raw W; the others are bias-free ``nn.Linear``.
    With ``conv`` the first weight becomes a ``Conv2d`` followed by the position-major flattening, and the
    network takes (N, C, H, W) images; otherwise inputs are flattened from dimension 1.

    Args:
        weights: W_i in solver layout (d_out × d_in; the conv weight as k²C × S).
        copies: Layer index → compressed copy.
        conv: Geometry of the optional first convolution.

    Returns:
        The network as ``nn.Sequential``.
    """
    layers: list[nn.Module] = [] if conv is not None else [nn.Flatten()]
    for index, weight in enumerate(weights):
        if index == 0 and conv is not None:
            layers.extend(conv.to_module(weight))
        elif index in copies:
            layers.append(copies[index].to_module())
        else:
            layers.append(_dense_linear(weight))
        if index < len(weights) - 1:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)

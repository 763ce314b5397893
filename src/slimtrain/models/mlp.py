"""Fully connected networks: a configurable MLP and LeNet-300-100."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from slimtrain.models.registry import register_model
from slimtrain.models.sizes import check_positive_int


class MLP(nn.Module):
    """Multi-layer perceptron on flattened inputs: ``Linear → ReLU`` per hidden width, then ``classifier``.

    Any ``C × H × W`` input is flattened to ``C·H·W`` features. Hidden layers are ``hidden[i]``; the last
    layer is ``classifier``. PyTorch's default ``nn.Linear`` initialisation is kept.

    Args:
        in_features: Number of input features (``C·H·W``).
        num_classes: Number of output logits.
        widths: Hidden layer widths, input side first; empty for a linear classifier.
        bias: Whether every linear layer has a bias (NN-BCD trains bias-free MLPs).
    """

    def __init__(
        self, in_features: int, num_classes: int, widths: Sequence[int] = (300, 100), bias: bool = True
    ):
        super().__init__()
        widths = [check_positive_int(f"widths[{i}]", w) for i, w in enumerate(widths)]
        fan_ins = [in_features, *widths]
        self.hidden = nn.ModuleList(nn.Linear(i, o, bias=bias) for i, o in zip(fan_ins, widths, strict=False))
        self.classifier = nn.Linear(fan_ins[-1], num_classes, bias=bias)
        self.activation = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map a batch ``(N, C, H, W)`` (or any ``(N, ...)``) to logits ``(N, num_classes)``."""
        x = x.flatten(1)
        for layer in self.hidden:
            x = self.activation(layer(x))
        return self.classifier(x)


@register_model("mlp")
def mlp(
    num_classes: int,
    in_channels: int,
    image_size: int,
    *,
    widths: Sequence[int] = (300, 100),
    bias: bool = True,
) -> MLP:
    """MLP with hidden ``widths`` on flattened ``in_channels × image_size × image_size`` inputs."""
    return MLP(in_channels * image_size * image_size, num_classes, widths=widths, bias=bias)


@register_model("lenet300_100")
def lenet300_100(num_classes: int, in_channels: int, image_size: int, *, bias: bool = True) -> MLP:
    """LeNet-300-100 (LeCun et al., 1998): the MLP with hidden widths 300 and 100."""
    return MLP(in_channels * image_size * image_size, num_classes, widths=(300, 100), bias=bias)

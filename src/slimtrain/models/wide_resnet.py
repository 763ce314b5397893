"""Wide residual networks (Zagoruyko & Komodakis, *Wide Residual Networks*, BMVC 2016)."""

from __future__ import annotations

import torch
from torch import nn

from slimtrain.models.init import kaiming_init_
from slimtrain.models.registry import register_model
from slimtrain.models.validation import check_positive_int


class WideBasicBlock(nn.Module):
    """Pre-activation block: ``conv2(dropout(ReLU(bn2(conv1(ReLU(bn1(x))))))) + shortcut``.

    When the shape changes, ``shortcut`` is a 1×1 conv applied to the pre-activated input ``ReLU(bn1(x))``;
    otherwise it is ``None`` and ``x`` itself is added.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        stride: Stride of ``conv1`` and of the shortcut.
        dropout: Dropout probability between the two convs.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, dropout: float):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.relu = nn.ReLU()
        self.shortcut = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        activated = self.relu(self.bn1(x))
        out = self.conv1(activated)
        out = self.conv2(self.dropout(self.relu(self.bn2(out))))
        return out + (x if self.shortcut is None else self.shortcut(activated))


class WideResNet(nn.Module):
    """WRN-d-k: stem ``conv1`` (16), stages ``layer1..3`` of (d−4)/6 blocks of widths 16k, 32k, 64k.

    Then ``bn``, ReLU, global average pooling and ``classifier``. Works for any image size.

    Args:
        depth: Total depth 6n+4 (28 for WRN-28-k).
        num_classes: Number of output logits.
        in_channels: Channels of the input images.
        widen_factor: The width multiplier k.
        dropout: Dropout probability inside every block (0.3 in the SFW reference runs).
        final_bn_momentum: Momentum of the final BatchNorm. The default 0.1 is PyTorch's; the SFW reference
            code uses 0.9 (which keeps mostly the last batch's statistics,
            docs/sfw.md#faithful-and-corrected-behaviour): pass 0.9 to reproduce it faithfully.

    Raises:
        ValueError: On a depth that is not 6n+4, a non-positive widen factor, or a probability/momentum
            outside [0, 1].
    """

    def __init__(
        self,
        depth: int,
        num_classes: int,
        in_channels: int,
        widen_factor: int = 10,
        dropout: float = 0.0,
        final_bn_momentum: float = 0.1,
    ):
        super().__init__()
        if (depth - 4) % 6 or depth < 10:
            raise ValueError(f"depth must be 6n+4 with n >= 1, got {depth!r}")
        check_positive_int("widen_factor", widen_factor)
        for name, value in (("dropout", dropout), ("final_bn_momentum", final_bn_momentum)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
                raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
        blocks_per_stage = (depth - 4) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        stages = []
        channels = 16
        for stage, stride in enumerate((1, 2, 2)):
            out_channels = 16 * widen_factor * 2**stage
            blocks = []
            for index in range(blocks_per_stage):
                blocks.append(WideBasicBlock(channels, out_channels, stride if index == 0 else 1, dropout))
                channels = out_channels
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.bn = nn.BatchNorm2d(channels, momentum=final_bn_momentum)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)
        kaiming_init_(self)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map images ``(N, C, H, W)`` to logits ``(N, num_classes)``."""
        x = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        return self.classifier(self.pool(self.relu(self.bn(x))).flatten(1))


@register_model("wrn28")
def wrn28(
    num_classes: int,
    in_channels: int,
    image_size: int,
    *,
    widen_factor: int = 10,
    dropout: float = 0.0,
    final_bn_momentum: float = 0.1,
) -> WideResNet:
    """WideResNet-28-k (default k = 10, 36.5 M parameters); see :class:`WideResNet`."""
    return WideResNet(28, num_classes, in_channels, widen_factor, dropout, final_bn_momentum)

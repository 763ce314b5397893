"""CIFAR ResNets of depth 6n+2 (He et al., *Deep Residual Learning for Image Recognition*, CVPR 2016, §4.2).

Three stages of ``n`` basic blocks with widths ``w, 2w, 4w`` (``w = 16`` in the paper, 64 in the SWD
reference code), a 3×3 stem without max-pool, global average pooling and a linear ``classifier``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from slimtrain.models.init import kaiming_init_
from slimtrain.models.registry import register_model
from slimtrain.models.sizes import check_positive_int

Shortcut = Literal["A", "B"]
RESNET_DEPTHS = (8, 20, 32, 44, 56, 110)


class ZeroPadShortcut(nn.Module):
    """Parameter-free "option A" shortcut: subsample spatially by ``stride``, zero-pad the new channels.

    The extra ``out_channels - in_channels`` channels are split evenly before and after the input channels.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``x`` subsampled to the block's output size with zero channels added."""
        extra = self.out_channels - self.in_channels
        return F.pad(x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, extra // 2, extra - extra // 2))

    def extra_repr(self) -> str:
        """Describe the shortcut in the module's ``repr``."""
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"


class BasicBlock(nn.Module):
    """Residual block ``ReLU([bn3](bn2(conv2(ReLU(bn1(conv1(x))))) + shortcut(x)))``.

    ``shortcut`` is an empty ``nn.Sequential`` (identity) when the shape is kept; otherwise a
    :class:`ZeroPadShortcut` (option A) or ``nn.Sequential(conv 1×1, BatchNorm)`` (option B, parameters
    ``shortcut.0.weight`` and ``shortcut.1.*``). ``bn3`` exists only with ``bn_after_add``: the BatchNorm
    after the residual addition that structured SWD (Tessier et al., 2020; spec ``swd.md`` §2.6) gates.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        stride: Stride of ``conv1`` and of the shortcut.
        shortcut: ``"A"`` (zero padding) or ``"B"`` (1×1 conv + BN) when the shape changes.
        bn_after_add: Add ``bn3`` after the residual addition.
    """

    def __init__(
        self, in_channels: int, out_channels: int, stride: int, shortcut: Shortcut, bn_after_add: bool
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            if shortcut == "A":
                self.shortcut = ZeroPadShortcut(in_channels, out_channels, stride)
            else:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                    nn.BatchNorm2d(out_channels),
                )
        self.bn3 = nn.BatchNorm2d(out_channels) if bn_after_add else None
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out)) + self.shortcut(x)
        if self.bn3 is not None:
            out = self.bn3(out)
        return self.relu(out)


class CifarResNet(nn.Module):
    """CIFAR ResNet-(6n+2): stem ``conv1``/``bn1``, stages ``layer1..3`` of ``n`` blocks, ``classifier``.

    Works for any image size (the stages halve it twice, rounding up; global average pooling follows).

    Args:
        depth: Total depth 6n+2 (8, 20, 32, 44, 56, 110, ...).
        num_classes: Number of output logits.
        in_channels: Channels of the input images.
        width: Channels of the first stage; the stages have ``width, 2·width, 4·width``.
        shortcut: ``"A"`` (parameter-free, He et al.'s CIFAR choice) or ``"B"`` (1×1 conv + BN). Structured
            pruning and channel-removing export need ``"B"``: option A ties the residual stream's channels
            to a fixed zero-padding layout that no conv owns.
        bn_after_add: A BatchNorm ``bn3`` after every residual addition (needed by structured SWD).

    Raises:
        ValueError: If ``depth`` is not 6n+2, ``width`` is not a positive int or ``shortcut`` is not A/B.
    """

    def __init__(
        self,
        depth: int,
        num_classes: int,
        in_channels: int,
        width: int = 16,
        shortcut: Shortcut = "A",
        bn_after_add: bool = False,
    ):
        super().__init__()
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
            raise ValueError(f"depth must be 6n+2 with n >= 1 (8, 20, 32, ...), got {depth!r}")
        check_positive_int("width", width)
        if shortcut not in ("A", "B"):
            raise ValueError(f"shortcut must be 'A' or 'B', got {shortcut!r}")
        if not isinstance(bn_after_add, bool):
            raise ValueError(f"bn_after_add must be a bool, got {bn_after_add!r}")
        blocks_per_stage = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        stages = []
        channels = width
        for stage, stride in enumerate((1, 2, 2)):
            out_channels = width * 2**stage
            blocks = []
            for index in range(blocks_per_stage):
                block_stride = stride if index == 0 else 1
                blocks.append(BasicBlock(channels, out_channels, block_stride, shortcut, bn_after_add))
                channels = out_channels
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)
        kaiming_init_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map images ``(N, C, H, W)`` to logits ``(N, num_classes)``."""
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.classifier(self.pool(x).flatten(1))


def _register_resnet(depth: int) -> None:
    def factory(
        num_classes: int,
        in_channels: int,
        image_size: int,
        *,
        width: int = 16,
        shortcut: Shortcut = "A",
        bn_after_add: bool = False,
    ) -> CifarResNet:
        return CifarResNet(depth, num_classes, in_channels, width, shortcut, bn_after_add)

    factory.__name__ = factory.__qualname__ = f"resnet{depth}"
    factory.__doc__ = f"CIFAR ResNet-{depth} ({(depth - 2) // 6} blocks per stage); see :class:`CifarResNet`."
    register_model(f"resnet{depth}")(factory)


for _depth in RESNET_DEPTHS:
    _register_resnet(_depth)

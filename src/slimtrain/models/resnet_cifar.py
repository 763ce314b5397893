"""ResNets for small images (He et al., *Deep Residual Learning for Image Recognition*, CVPR 2016).

The CIFAR ResNets of depth 6n+2 (He et al. 2016, Sec. 4.2): three stages of ``n`` basic blocks with widths
``w, 2w, 4w`` (``w = 16`` in the paper, 64 in the SWD reference code). ResNet-18 in its CIFAR form (the SFW
and SWD reference codes): four stages of two blocks with widths 64 to 512. Both have a 3×3 stem without
max-pool, global average pooling and a linear ``classifier``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from slimtrain.models.init import kaiming_init_
from slimtrain.models.registry import register_model
from slimtrain.models.validation import check_bool, check_int_sequence, check_positive_int

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
    after the residual addition that structured SWD (Tessier et al., 2020;
    docs/swd.md#structured-swd-and-the-parameter-budget) gates.

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


def depth_to_stage_blocks(depth: int) -> tuple[int, int, int]:
    """Return the blocks per stage ``(n, n, n)`` of the CIFAR ResNet of depth 6n+2.

    Raises:
        ValueError: If ``depth`` is not 6n+2 with n ≥ 1.
    """
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise ValueError(f"depth must be 6n+2 with n >= 1 (8, 20, 32, ...), got {depth!r}")
    n = (depth - 2) // 6
    return (n, n, n)


class CifarResNet(nn.Module):
    """ResNet for small images: stem ``conv1``/``bn1``, stages ``layer1``, ``layer2``, ..., ``classifier``.

    Stage ``i`` (from 0) has ``stage_blocks[i]`` blocks of width ``width·2^i``; every stage but the first
    starts with a stride-2 block. Works for any image size (each stride halves it, rounding up; global
    average pooling follows).

    Args:
        stage_blocks: Blocks per stage: ``(n, n, n)`` for ResNet-(6n+2), ``(2, 2, 2, 2)`` for ResNet-18.
        num_classes: Number of output logits.
        in_channels: Channels of the input images.
        width: Channels of the first stage.
        shortcut: ``"A"`` (parameter-free, He et al.'s CIFAR choice) or ``"B"`` (1×1 conv + BN). Structured
            pruning and channel-removing export need ``"B"``: option A ties the residual stream's channels
            to a fixed zero-padding layout that no conv owns.
        bn_after_add: A BatchNorm ``bn3`` after every residual addition (needed by structured SWD).

    Raises:
        ValueError: If a stage has no block, ``width`` is not a positive int or ``shortcut`` is not A/B.
    """

    def __init__(
        self,
        stage_blocks: Sequence[int],
        num_classes: int,
        in_channels: int,
        width: int = 16,
        shortcut: Shortcut = "A",
        bn_after_add: bool = False,
    ):
        super().__init__()
        check_int_sequence("stage_blocks", stage_blocks)
        check_positive_int("width", width)
        if shortcut not in ("A", "B"):
            raise ValueError(f"shortcut must be 'A' or 'B', got {shortcut!r}")
        check_bool("bn_after_add", bn_after_add)
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.stage_names = tuple(f"layer{stage + 1}" for stage in range(len(stage_blocks)))
        channels = width
        for stage, (name, num_blocks) in enumerate(zip(self.stage_names, stage_blocks, strict=True)):
            out_channels = width * 2**stage
            blocks = []
            for index in range(num_blocks):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(BasicBlock(channels, out_channels, stride, shortcut, bn_after_add))
                channels = out_channels
            self.add_module(name, nn.Sequential(*blocks))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)
        kaiming_init_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map images ``(N, C, H, W)`` to logits ``(N, num_classes)``."""
        x = self.relu(self.bn1(self.conv1(x)))
        for name in self.stage_names:
            x = getattr(self, name)(x)
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
        return CifarResNet(
            depth_to_stage_blocks(depth), num_classes, in_channels, width, shortcut, bn_after_add
        )

    factory.__name__ = factory.__qualname__ = f"resnet{depth}"
    factory.__doc__ = f"CIFAR ResNet-{depth} ({(depth - 2) // 6} blocks per stage); see :class:`CifarResNet`."
    register_model(f"resnet{depth}")(factory)


for _depth in RESNET_DEPTHS:
    _register_resnet(_depth)


@register_model("resnet18")
def resnet18(
    num_classes: int,
    in_channels: int,
    image_size: int,
    *,
    width: int = 64,
    shortcut: Shortcut = "B",
    bn_after_add: bool = False,
) -> CifarResNet:
    """ResNet-18 for small images: four stages of 2 blocks, widths 64–512, 1×1 shortcuts (11.2 M parameters).

    The CIFAR form used by the SFW and SWD reference codes (3×3 stem, no max-pool); see :class:`CifarResNet`.
    """
    return CifarResNet((2, 2, 2, 2), num_classes, in_channels, width, shortcut, bn_after_add)

"""VGG-16 with batch norm for small images (Simonyan & Zisserman, ICLR 2015; CIFAR variant)."""

from __future__ import annotations

import torch
from torch import nn

from slimtrain.models.init import kaiming_init_
from slimtrain.models.registry import register_model
from slimtrain.models.sizes import check_positive_number, pool_output_size

# Output channels of the 3×3 convs; "M" is a 2×2 max-pool.
VGG16_LAYOUT: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"
)  # fmt: skip


class VGG(nn.Module):
    """VGG with batch norm: ``features`` (conv 3×3 → BN → ReLU, max-pools) then a linear ``classifier``.

    The CIFAR variant (as in the network-slimming and SFW codes): no 4096-wide hidden layers, one linear
    layer on the flattened final feature map. The pools use ``ceil_mode=True`` so that every image size
    works; for 32×32 inputs this is the usual layout (final map 1×1, 512 features), for 28×28 the maps are
    14, 7, 4, 2, 1. The classifier's input size is ``channels · s²`` with ``s`` the final map side.

    Args:
        layout: Conv widths and ``"M"`` pools, input side first.
        num_classes: Number of output logits.
        in_channels: Channels of the input images.
        image_size: Height (= width) of the input images.
        width_multiplier: Scales every conv width (rounded, at least 1).

    Raises:
        ValueError: If ``width_multiplier`` is not a positive number.
    """

    def __init__(
        self,
        layout: tuple[int | str, ...],
        num_classes: int,
        in_channels: int,
        image_size: int,
        width_multiplier: float = 1.0,
    ):
        super().__init__()
        check_positive_number("width_multiplier", width_multiplier)
        layers: list[nn.Module] = []
        channels, side = in_channels, image_size
        for entry in layout:
            if entry == "M":
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
                side = pool_output_size(side, 2, ceil_mode=True)
            else:
                width = max(1, round(int(entry) * width_multiplier))
                layers += [
                    nn.Conv2d(channels, width, 3, padding=1, bias=False),
                    nn.BatchNorm2d(width),
                    nn.ReLU(),
                ]
                channels = width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(channels * side * side, num_classes)
        kaiming_init_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map images ``(N, C, H, W)`` to logits ``(N, num_classes)``."""
        return self.classifier(self.features(x).flatten(1))


@register_model("vgg16_bn")
def vgg16_bn(num_classes: int, in_channels: int, image_size: int, *, width_multiplier: float = 1.0) -> VGG:
    """VGG-16 with batch norm, CIFAR variant: 13 convs (64,64,M,128,128,M,256×3,M,512×3,M,512×3,M)."""
    return VGG(VGG16_LAYOUT, num_classes, in_channels, image_size, width_multiplier)

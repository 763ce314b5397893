"""LeNet-5 convolutional networks: the classic layout and the Caffe variant used by DLRT."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from slimtrain.models.registry import register_model
from slimtrain.models.sizes import conv_output_size, pool_output_size

_KERNEL = 5


def _feature_map_size(image_size: int, padding: Sequence[int]) -> int:
    """Side of the feature map after ``(conv 5×5 → max-pool 2)`` twice; ≤ 0 when the input is too small."""
    size = image_size
    for pad in padding:
        size = conv_output_size(size, _KERNEL, padding=pad)
        if size < 1:
            return 0
        size = pool_output_size(size)
    return size


class LeNet5(nn.Module):
    """LeNet-5 family: two ``conv 5×5 → ReLU → max-pool 2`` stages, then a ReLU MLP head.

    The modern form of LeCun et al. (1998): ReLU and max-pooling instead of tanh and sub-sampling, as in the
    reference codes. Layers: ``conv1``, ``conv2``, ``fc1``, ... and the last linear layer ``classifier``.
    The flatten size follows from the image size and the paddings. PyTorch's default initialisation is kept.

    Args:
        num_classes: Number of output logits.
        in_channels: Channels of the input images.
        image_size: Height (= width) of the input images.
        conv_channels: Output channels of the two convolutions.
        fc_widths: Hidden widths of the head.
        padding: Zero padding of the two convolutions.

    Raises:
        ValueError: If ``padding`` is not two non-negative ints, or the image is too small for the
            convolutions and pools (the message gives the smallest valid size).
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        image_size: int,
        conv_channels: tuple[int, int],
        fc_widths: Sequence[int],
        padding: Sequence[int],
    ):
        super().__init__()
        padding = tuple(padding)
        if len(padding) != 2 or any(isinstance(p, bool) or not isinstance(p, int) or p < 0 for p in padding):
            raise ValueError(f"padding must be two non-negative ints (one per conv), got {padding!r}")
        side = _feature_map_size(image_size, padding)
        if side < 1:
            smallest = next(s for s in range(1, 10_000) if _feature_map_size(s, padding) >= 1)
            raise ValueError(
                f"image_size={image_size} is too small for two 5×5 convs with padding {padding} and two "
                f"2×2 pools; the smallest valid image_size is {smallest}"
            )
        c1, c2 = conv_channels
        self.conv1 = nn.Conv2d(in_channels, c1, _KERNEL, padding=padding[0])
        self.conv2 = nn.Conv2d(c1, c2, _KERNEL, padding=padding[1])
        self.pool = nn.MaxPool2d(2)
        self.activation = nn.ReLU()
        fan_ins = [c2 * side * side, *fc_widths]
        self.hidden = nn.ModuleList(nn.Linear(i, o) for i, o in zip(fan_ins, fc_widths, strict=False))
        self.classifier = nn.Linear(fan_ins[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map images ``(N, C, H, W)`` to logits ``(N, num_classes)``."""
        x = self.pool(self.activation(self.conv1(x)))
        x = self.pool(self.activation(self.conv2(x))).flatten(1)
        for layer in self.hidden:
            x = self.activation(layer(x))
        return self.classifier(x)


@register_model("lenet5")
def lenet5(
    num_classes: int, in_channels: int, image_size: int, *, padding: Sequence[int] | None = None
) -> LeNet5:
    """Classic LeNet-5: conv 6@5×5, pool, conv 16@5×5, pool, fc 120, fc 84, classifier.

    ``padding=None`` chooses ``(2, 0)``: the first conv keeps the size (LeCun's 28×28 digits padded to 32),
    giving the classic 16·5·5 = 400 flatten size at 28×28 (576 at 32×32); inputs smaller than 10×10 (e.g.
    8×8 digits) get ``(2, 2)`` so the second conv has a map to act on (16·2·2 = 64 at 8×8).
    """
    if padding is None:
        padding = (2, 0) if image_size >= 10 else (2, 2)
    return LeNet5(num_classes, in_channels, image_size, (6, 16), (120, 84), padding)


@register_model("lenet5_caffe")
def lenet5_caffe(
    num_classes: int, in_channels: int, image_size: int, *, padding: Sequence[int] = (0, 0)
) -> LeNet5:
    """Caffe LeNet-5 as used by DLRT (Schotthöfer et al., 2022): conv 20@5×5, pool, conv 50@5×5, pool, fc 500.

    On 28×28×1 the flatten size is 50·4·4 = 800 (431,080 parameters); on 32×32×3 it is 1250. Unpadded, it
    needs at least 16×16 inputs.
    """
    return LeNet5(num_classes, in_channels, image_size, (20, 50), (500,), padding)

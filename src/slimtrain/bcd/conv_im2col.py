"""The first 3×3 convolution of the NN-BCD CNN as a matrix problem via im2col (docs/nnbcd.md).

Patches are taken by ``F.unfold`` (patch entries ordered channel, kernel row, kernel column, exactly as in
a flattened ``nn.Conv2d`` weight), so the learned W₁ (9C × S) converts to a convolution by a transpose.
Activations passed to the next layer are flattened position-major, channel-minor: feature ``p·S + s``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Im2colConv:
    """Geometry and layout maps of an unpadded k×k convolution solved as ``X̄ W₁`` (docs/nnbcd.md).

    Args:
        in_channels: Input channels C.
        out_channels: Filters S.
        image_size: Input height and width.
        kernel_size: Square kernel size (3 in the paper).
        stride: Stride (2 in the paper).

    Raises:
        ValueError: If the kernel does not fit the image.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        image_size: tuple[int, int],
        kernel_size: int = 3,
        stride: int = 2,
    ) -> None:
        height, width = image_size
        if kernel_size > min(height, width) or kernel_size < 1 or stride < 1:
            raise ValueError(f"kernel {kernel_size} with stride {stride} does not fit image {image_size}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.image_size = (height, width)
        self.kernel_size = kernel_size
        self.stride = stride
        self.out_size = ((height - kernel_size) // stride + 1, (width - kernel_size) // stride + 1)

    @property
    def positions(self) -> int:
        """Number P of output positions."""
        return self.out_size[0] * self.out_size[1]

    @property
    def patch_size(self) -> int:
        """Entries per patch, k²·C (the rows of W₁)."""
        return self.in_channels * self.kernel_size**2

    @property
    def out_features(self) -> int:
        """Width P·S of the flattened activation handed to the next layer."""
        return self.positions * self.out_channels

    def patches(self, images: torch.Tensor) -> torch.Tensor:
        """X̄: one row per (sample, position), one column per patch entry.

        Args:
            images: Tensor of shape (N, C, H, W).

        Returns:
            Tensor of shape (N·P, k²·C).

        Raises:
            ValueError: If the images do not have the configured shape.
        """
        expected = (self.in_channels, *self.image_size)
        if images.dim() != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(f"conv layer expects images of shape (N, {expected}), got {tuple(images.shape)}")
        cols = F.unfold(images, self.kernel_size, stride=self.stride)  # (N, k²C, P)
        return cols.transpose(1, 2).reshape(-1, self.patch_size)

    def to_features(self, rows: torch.Tensor) -> torch.Tensor:
        """Map a (N·P) × S matrix to the (P·S) × N column layout (feature index p·S + s)."""
        return rows.reshape(-1, self.out_features).T

    def to_rows(self, features: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`to_features`: (P·S) × N to (N·P) × S."""
        return features.T.reshape(-1, self.out_channels)

    def to_module(self, weight: torch.Tensor) -> nn.Sequential:
        """An ordinary ``Conv2d`` (no bias) followed by the position-major flattening.

        Args:
            weight: W₁ of shape (k²·C) × S.

        Returns:
            ``nn.Sequential(Conv2d, ChannelLastFlatten)`` mapping (N, C, H, W) to (N, P·S) pre-activations.
        """
        conv = nn.Conv2d(
            self.in_channels, self.out_channels, self.kernel_size, stride=self.stride, bias=False
        )
        kernel = weight.T.reshape(self.out_channels, self.in_channels, self.kernel_size, self.kernel_size)
        conv.weight = nn.Parameter(kernel.detach().clone())
        conv.to(dtype=weight.dtype, device=weight.device)
        return nn.Sequential(conv, ChannelLastFlatten())


class ChannelLastFlatten(nn.Module):
    """Flatten (N, S, H, W) to (N, H·W·S), position-major and channel-minor (docs/nnbcd.md)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Permute channels last and flatten."""
        return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)

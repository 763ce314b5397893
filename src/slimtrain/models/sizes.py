"""Spatial-size arithmetic shared by the convolutional models (flatten sizes, smallest valid inputs)."""

from __future__ import annotations

import math


def conv_output_size(
    size: int, kernel_size: int, stride: int = 1, padding: int = 0, dilation: int = 1
) -> int:
    """Output length of a convolution along one axis, PyTorch's ``⌊(H + 2p − d(k − 1) − 1)/s⌋ + 1``.

    May be ≤ 0 when the input is too small (callers check), so that models can search valid input sizes.
    """
    return (size + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1


def pool_output_size(size: int, kernel_size: int = 2, ceil_mode: bool = False) -> int:
    """Return the output height of a max-pool with stride = kernel size and no padding (≤ 0 if too small)."""
    rounding = math.ceil if ceil_mode else math.floor
    return rounding((size - kernel_size) / kernel_size) + 1

"""Spatial-size arithmetic shared by the convolutional models (flatten sizes, smallest valid inputs)."""

from __future__ import annotations

import math


def conv_output_size(size: int, kernel_size: int, stride: int = 1, padding: int = 0) -> int:
    """Return the output height of a square convolution (may be ≤ 0 when the input is too small)."""
    return (size + 2 * padding - kernel_size) // stride + 1


def pool_output_size(size: int, kernel_size: int = 2, ceil_mode: bool = False) -> int:
    """Return the output height of a max-pool with stride = kernel size and no padding (≤ 0 if too small)."""
    rounding = math.ceil if ceil_mode else math.floor
    return rounding((size - kernel_size) / kernel_size) + 1


def check_positive_int(name: str, value: object) -> int:
    """Return ``value`` if it is a positive ``int`` (not a bool); else raise a ``ValueError`` naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def check_positive_number(name: str, value: object) -> float:
    """Return ``value`` if it is a positive ``int`` or ``float`` (not a bool); else raise a ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return value

"""Closed-form MAC counts per sample (docs/metrics.md#macs); FLOPs = 2·MACs.

Bias additions, normalisation, activations, pooling and residual additions are not counted (ShrinkBench/SFW
convention). Output sizes follow PyTorch's rule ``⌊(H + 2p − d(k − 1) − 1)/s⌋ + 1``, not the
``⌈H/stride⌉`` shortcut of the ShrinkBench-derived SFW counter, and ``groups`` divides the input channels.
"""

from __future__ import annotations

import math
import warnings


def conv2d_macs(
    c_in: int, c_out: int, h_out: int, w_out: int, kernel: tuple[int, int], groups: int = 1
) -> int:
    """Dense MACs of a Conv2d: C_out·H_out·W_out·(C_in/groups)·k_h·k_w (docs/metrics.md#macs)."""
    if c_in % groups or c_out % groups:
        raise ValueError(f"groups={groups} must divide c_in={c_in} and c_out={c_out}")
    return c_out * h_out * w_out * (c_in // groups) * kernel[0] * kernel[1]


def linear_macs(n_in: int, n_out: int, tokens: int = 1) -> int:
    """Dense MACs of a Linear layer: in·out per token."""
    return n_in * n_out * tokens


def svd_conv_macs(c_in: int, c_out: int, rank: int, kernel: tuple[int, int], h_out: int, w_out: int) -> int:
    """MACs of an SVD pair (k×k conv C_in → r, then 1×1 conv r → C_out), docs/metrics.md#macs.

    ``r·C_in·k_h·k_w·H_out·W_out + C_out·r·H_out·W_out``.
    """
    return rank * c_in * kernel[0] * kernel[1] * h_out * w_out + c_out * rank * h_out * w_out


def svd_linear_macs(n: int, m: int, rank: int) -> int:
    """MACs of a rank-r factorized n×m Linear layer: r·(n + m) per token."""
    return rank * (n + m)


def tucker_conv_macs(
    c_in: int,
    c_out: int,
    rank_out: int,
    rank_in: int,
    kernel: tuple[int, int],
    input_hw: tuple[int, int],
    output_hw: tuple[int, int],
) -> int:
    """MACs of a Tucker-2 three-stage conv (1×1 C_in → r₂, k×k core r₂ → r₁, 1×1 r₁ → C_out), docs/metrics.md.

    ``C_in·r₂·H_in·W_in + r₁·r₂·k_h·k_w·H_out·W_out + r₁·C_out·H_out·W_out``; the first 1×1 projection runs
    at the **input** resolution.

    Args:
        c_in: Input channels.
        c_out: Output channels.
        rank_out: r₁, the rank on the output-channel mode.
        rank_in: r₂, the rank on the input-channel mode.
        kernel: ``(k_h, k_w)`` of the core convolution.
        input_hw: ``(H_in, W_in)``.
        output_hw: ``(H_out, W_out)``.
    """
    h_in, w_in = input_hw
    h_out, w_out = output_hw
    return (
        c_in * rank_in * h_in * w_in
        + rank_out * rank_in * kernel[0] * kernel[1] * h_out * w_out
        + rank_out * c_out * h_out * w_out
    )


def theoretical_speedup(macs_dense: float, macs_effective: float) -> float:
    """theoretical_speedup = macs_dense / macs_effective (docs/metrics.md#macs).

    Warns (``UserWarning``) when the result is below 1, which happens for factorizations at high rank.
    """
    if macs_effective <= 0:
        return math.inf
    speedup = macs_dense / macs_effective
    if speedup < 1:
        warnings.warn(
            f"theoretical_speedup {speedup:.3f} < 1: the compressed model needs more MACs than the dense one",
            stacklevel=2,
        )
    return speedup

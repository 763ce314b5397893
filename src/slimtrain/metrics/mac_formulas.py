"""Closed-form MAC counts per sample, and FLOP formulas for ops FlopCounterMode misses (docs/metrics.md#macs).

FLOPs = 2·MACs. Bias additions, normalisation, activations, softmax, pooling and residual additions are not
counted (ShrinkBench/SFW convention). Output sizes follow PyTorch's rule ``⌊(H + 2p − d(k − 1) − 1)/s⌋ + 1``,
not the ``⌈H/stride⌉`` shortcut of the ShrinkBench-derived SFW counter, and ``groups`` divides the input
channels.

:data:`FLOP_FORMULAS` completes ``torch.utils.flop_counter.FlopCounterMode`` (its ``custom_mapping``) for the
fused ops it counts as zero: the CPU and other-backend kernels of ``F.scaled_dot_product_attention``, the
fused RNN kernels (oneDNN, cuDNN, MIOpen), ``nn.MultiheadAttention``'s and ``nn.TransformerEncoderLayer``'s
inference fast paths, and ``nn.Bilinear``. Each counts the multiply-accumulates of the decomposed
computation, so a model counts the same on every device and in either execution path.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import cast

import torch
from torch import Tensor

FlopFormula = Callable[..., int]
"""A FlopCounterMode formula: the op's arguments (tensors themselves) and ``out_val`` → FLOPs of the call."""

FLOP_FORMULAS: dict[object, FlopFormula] = {}
"""FLOP formulas by aten op, for ``FlopCounterMode(custom_mapping=FLOP_FORMULAS)``; counts whole calls."""

_aten = torch.ops.aten


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
    ``inf`` when the compressed model runs no MACs, NaN when neither model does (0/0).
    """
    if macs_effective <= 0:
        return math.inf if macs_dense > 0 else math.nan
    speedup = macs_dense / macs_effective
    if speedup < 1:
        warnings.warn(
            f"theoretical_speedup {speedup:.3f} < 1: the compressed model needs more MACs than the dense one",
            stacklevel=2,
        )
    return speedup


def rnn_macs(gates: int, input_size: int, hidden_size: int, steps: int) -> int:
    """MACs of one RNN layer in one direction over ``steps`` time steps of one sequence.

    ``steps·gates·(input_size·hidden_size + hidden_size²)``: every step multiplies the input by W_ih and the
    previous hidden state by W_hh; gates = 4 (LSTM), 3 (GRU), 1 (RNN). A bidirectional layer counts twice;
    layers after the first take ``directions·hidden_size`` inputs.
    """
    return steps * gates * (input_size * hidden_size + hidden_size * hidden_size)


def attention_macs(queries: int, keys: int, head_dim: int, value_dim: int, heads: int = 1) -> int:
    """MACs of scaled dot-product attention of one sequence: Q·Kᵀ and softmax·V (softmax not counted).

    ``heads·queries·keys·(head_dim + value_dim)``.
    """
    return heads * queries * keys * (head_dim + value_dim)


def _formula(*ops: object) -> Callable[[FlopFormula], FlopFormula]:
    """Register a formula for ``ops`` in :data:`FLOP_FORMULAS`, taking the tensors themselves.

    Raw tensors rather than shapes, because the fast paths pass nested tensors, which have no shape.
    """

    def register(formula: FlopFormula) -> FlopFormula:
        formula._get_raw = True  # type: ignore[attr-defined]  # FlopCounterMode's flag for raw arguments
        for op in ops:
            FLOP_FORMULAS[op] = formula
        return formula

    return register


def _lengths(x: Tensor) -> list[int]:
    """Length of every sequence in ``x`` (``(..., L, E)``, or a nested tensor of ``(L_i, E)`` sequences)."""
    if x.is_nested:
        return [int(size[0]) for size in x._nested_tensor_size()]
    return [x.shape[-2]] * (x.numel() // (x.shape[-2] * x.shape[-1]) if x.numel() else 0)


def _rows(x: Tensor) -> int:
    """Vectors in ``x`` along its last dimension: tokens of a padded, packed or nested sequence batch."""
    return sum(_lengths(x)) if x.is_nested else x.numel() // x.shape[-1]


@_formula(
    _aten._scaled_dot_product_flash_attention_for_cpu,
    _aten._scaled_dot_product_fused_attention_overrideable,
    _aten._scaled_dot_product_attention_math_for_mps,
)
def _sdpa_flops(
    query: Tensor, key: Tensor, value: Tensor, *args: object, out_val: object = None, **kw
) -> int:
    """Q ``(..., L, E)``, K ``(..., S, E)``, V ``(..., S, Ev)``: each batch·head: L queries × S keys."""
    pairs = query.numel() // (query.shape[-2] * query.shape[-1])
    return 2 * pairs * attention_macs(query.shape[-2], key.shape[-2], query.shape[-1], value.shape[-1])


@_formula(_aten.mkldnn_rnn_layer)
def _rnn_layer_flops(
    x: Tensor, weight_ih: Tensor, weight_hh: Tensor, *args: object, out_val: object = None, **kw
) -> int:
    """One layer in one direction (oneDNN): each time step of each sequence multiplies by W_ih and W_hh."""
    return 2 * _rows(x) * (weight_ih.numel() + weight_hh.numel())


@_formula(_aten._cudnn_rnn, _aten.miopen_rnn)
def _rnn_flops(x: Tensor, weights: list[Tensor], *args: object, out_val: object = None, **kw) -> int:
    """All layers and directions (cuDNN, MIOpen): each weight matrix (W_ih, W_hh, W_hr) once per time step."""
    return 2 * _rows(x) * sum(w.numel() for w in weights if w.dim() == 2)


def _self_attention_flops(query: Tensor, key: Tensor, value: Tensor, qkv_weight: Tensor) -> int:
    """In-projections of Q, K and V (each E×E) and attention over all heads (head dims sum to E)."""
    embed = qkv_weight.shape[1]
    projections = (_rows(query) + _rows(key) + _rows(value)) * qkv_weight.numel() // 3
    pairs = zip(_lengths(query), _lengths(key), strict=True)
    return 2 * (projections + sum(attention_macs(q, k, embed, embed) for q, k in pairs))


@_formula(_aten._native_multi_head_attention)
def _mha_flops(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    embed_dim: int,
    num_head: int,
    qkv_weight: Tensor,
    qkv_bias: Tensor,
    proj_weight: Tensor,
    *args: object,
    out_val: object = None,
    **kw,
) -> int:
    """``nn.MultiheadAttention``'s fast path: in-projections, attention, out-projection."""
    return _self_attention_flops(query, key, value, qkv_weight) + 2 * _rows(query) * proj_weight.numel()


@_formula(_aten._transformer_encoder_layer_fwd)
def _encoder_layer_flops(src: Tensor, *args: object, out_val: object = None, **kw) -> int:
    """``nn.TransformerEncoderLayer``'s fast path: self-attention, out-projection, feed-forward."""
    # qkv_weight, proj_weight, ffn_weight_1, ffn_weight_2 in the op's schema (after src)
    qkv_weight, proj_weight, ffn_weight_1, ffn_weight_2 = (cast(Tensor, args[i]) for i in (2, 4, 13, 15))
    linear = proj_weight.numel() + ffn_weight_1.numel() + ffn_weight_2.numel()
    return _self_attention_flops(src, src, src, qkv_weight) + 2 * _rows(src) * linear


@_formula(_aten._trilinear)
def _trilinear_flops(
    i1: Tensor,
    i2: Tensor,
    i3: Tensor,
    expand1: list[int],
    expand2: list[int],
    expand3: list[int],
    *args: object,
    out_val: object = None,
    **kw,
) -> int:
    """``nn.Bilinear``: one MAC per term of the broadcast product (batch·out·in1·in2)."""
    shapes = []
    for tensor, expand in ((i1, expand1), (i2, expand2), (i3, expand3)):
        shape = list(tensor.shape)
        for dim in sorted(expand):
            shape.insert(dim, 1)
        shapes.append(shape)
    return 2 * math.prod(max(sizes) for sizes in zip(*shapes, strict=True))

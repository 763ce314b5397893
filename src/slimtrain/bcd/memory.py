"""Up-front memory estimate for full-batch NN-BCD (docs/nnbcd.md: U_i and V_i are d_i × N).

NN-BCD keeps every pre-activation and activation of the whole training set, so memory grows linearly in
N. The estimate counts the stored blocks, the cached products W_iV_{i−1}, the largest per-layer
temporaries of a sweep and the weight-sized work of the solves and TT-SVDs; it is an estimate, used to
refuse a run before it starts rather than to account for allocator overhead.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence

import torch

from slimtrain.bcd.conv_im2col import Im2colConv

# Temporaries of one block update, in multiples of the widest d_i × N block (products, RHS, prox branches).
_TEMPORARY_BLOCKS = 4
# Weight-sized arrays per layer: W, its copy, the previous W; plus Gram and factor of the widest solve.
_WEIGHT_COPIES = 3
_SOLVE_COPIES = 2


def estimate_full_batch_bytes(
    widths: Sequence[int], n_samples: int, dtype: torch.dtype, conv: Im2colConv | None = None
) -> int:
    """Estimated peak bytes of a full-batch NN-BCD run.

    Args:
        widths: Linear layer widths ``[d_0, …, d_L]`` (d_0 is the conv output width when ``conv`` is set).
        n_samples: Training samples N.
        dtype: Floating dtype of the solver.
        conv: The optional first convolution.

    Returns:
        Estimated bytes.
    """
    # X, Y, U_i and V_i; the cached products W_iV_{i−1} and the previous V_i they keep alive; temporaries.
    per_sample = widths[0] + widths[-1] + 2 * sum(widths[1:])
    per_sample += sum(widths[1:]) + sum(widths[1:-1]) + _TEMPORARY_BLOCKS * max(widths)
    fixed = _WEIGHT_COPIES * sum(a * b for a, b in itertools.pairwise(widths))
    fixed += _SOLVE_COPIES * max(widths) ** 2
    if conv is not None:
        # Patches X̄, U₁ (rows), V₁ and σ(U₁) in the feature layout.
        per_sample += conv.positions * conv.patch_size + 2 * conv.out_features
        fixed += _WEIGHT_COPIES * conv.patch_size * conv.out_channels
    itemsize = torch.empty((), dtype=dtype).element_size()
    return itemsize * (per_sample * n_samples + fixed)


def max_full_batch_samples(
    widths: Sequence[int], budget_bytes: int, dtype: torch.dtype, conv: Im2colConv | None = None
) -> int:
    """Largest N whose estimate fits ``budget_bytes`` (0 if not even the weights fit).

    Args:
        widths: Linear layer widths ``[d_0, …, d_L]``.
        budget_bytes: Memory budget in bytes.
        dtype: Floating dtype of the solver.
        conv: The optional first convolution.

    Returns:
        The largest number of samples that fits.
    """
    fixed = estimate_full_batch_bytes(widths, 0, dtype, conv)
    per_sample = estimate_full_batch_bytes(widths, 1, dtype, conv) - fixed
    return max(0, (budget_bytes - fixed) // per_sample)


def available_memory_bytes(device: torch.device) -> int:
    """Free memory of a CUDA device, or the available physical memory of the host.

    Args:
        device: Device the solver runs on.

    Returns:
        Bytes currently available.
    """
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")

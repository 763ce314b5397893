"""Magnitude masks: exact "remove the k smallest |w|" selections, global or per layer.

The selection never sorts all values: ``torch.kthvalue`` finds the k-th smallest magnitude in O(n), every
value strictly below it is removed, and ties at the threshold are broken by position (the earliest entries
of the concatenation are removed first), so exactly k entries are removed and the result is deterministic —
identical on every distributed rank that holds the same weights. This is the selection of SWD's corrected
mode (docs/swd.md#objective-and-selection and #corrected-defaults-and-faithful-flags "Full sort ... every
batch") and of the magnitude-pruning baselines (Han et al., "Learning both Weights and Connections for
Efficient Neural Networks", NeurIPS 2015).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from fractions import Fraction

import torch
from torch import Tensor

__all__ = ["per_tensor_magnitude_masks", "removal_count", "smallest_k_mask", "smallest_magnitude_masks"]


def _exact_fraction(value: float | Fraction) -> Fraction:
    # repr() gives the shortest decimal that round-trips, so 0.3 becomes 3/10 rather than 0.29999...
    return value if isinstance(value, Fraction) else Fraction(repr(float(value)))


def removal_count(n: int, sparsity: float | Fraction) -> int:
    """Number of entries to remove out of ``n`` for a sparsity fraction: ⌊sparsity·n⌋, computed exactly.

    Args:
        n: Population size.
        sparsity: Fraction removed, in [0, 1]. Floats are read as the decimal they print as (0.3 is 3/10).

    Returns:
        ⌊sparsity·n⌋ without floating-point rounding error.

    Raises:
        ValueError: If ``sparsity`` is outside [0, 1] or ``n`` is negative.
    """
    frac = _exact_fraction(sparsity)
    if not 0 <= frac <= 1:
        raise ValueError(f"sparsity must lie in [0, 1], got {sparsity}")
    if n < 0:
        raise ValueError(f"population size must be non-negative, got {n}")
    return math.floor(frac * n)


def smallest_k_mask(values: Tensor, k: int) -> Tensor:
    """Boolean mask of exactly the ``k`` smallest entries of a 1-D tensor, ties broken by position.

    Args:
        values: 1-D tensor of finite values (typically magnitudes).
        k: How many entries to select, ``0 <= k <= values.numel()``.

    Returns:
        Boolean tensor shaped like ``values``, True on the selected entries. Every selected value is ≤ every
        unselected one; among equal values the ones with the smallest index are selected first.

    Raises:
        ValueError: If ``values`` is not 1-D or ``k`` is out of range.
    """
    if values.dim() != 1:
        raise ValueError(f"values must be 1-D, got shape {tuple(values.shape)}")
    n = values.numel()
    if not 0 <= k <= n:
        raise ValueError(f"k must lie in [0, {n}], got {k}")
    if k == 0:
        return torch.zeros_like(values, dtype=torch.bool)
    if k == n:
        return torch.ones_like(values, dtype=torch.bool)
    threshold = torch.kthvalue(values, k).values
    below = values < threshold
    at_threshold = values == threshold
    # The slots left after the values below the threshold go to its first ties by position; computed on
    # the device, so a training step that selects every batch never waits for the host.
    free = k - below.sum()
    return below | (at_threshold & (torch.cumsum(at_threshold, dim=0) <= free))


def _magnitudes(tensors: Mapping[str, Tensor]) -> Tensor:
    # float32 at least, so half-precision weights are compared in the same precision on every rank.
    dtype = torch.promote_types(next(iter(tensors.values())).dtype, torch.float32)
    # One abs over the concatenation rather than one per tensor: fewer small kernels per step.
    return torch.cat([t.detach().reshape(-1).to(dtype) for t in tensors.values()]).abs_()


def smallest_magnitude_masks(tensors: Mapping[str, Tensor], n_remove: int) -> dict[str, Tensor]:
    """Keep masks that remove the ``n_remove`` smallest magnitudes over all tensors together.

    One global threshold across layers (docs/swd.md#objective-and-selection): the tensors are concatenated in
    mapping order and :func:`smallest_k_mask` picks exactly ``n_remove`` entries.

    Args:
        tensors: Named tensors (e.g. weights), in a fixed order; ties are broken by that order.
        n_remove: Number of entries to remove in total (see :func:`removal_count`).

    Returns:
        ``{name: keep_mask}`` with boolean masks shaped like the tensors (True = kept).

    Raises:
        ValueError: If ``tensors`` is empty or ``n_remove`` is out of range.
    """
    if not tensors:
        raise ValueError("smallest_magnitude_masks needs at least one tensor")
    removed = smallest_k_mask(_magnitudes(tensors), n_remove)
    masks = {}
    offset = 0
    for name, t in tensors.items():
        masks[name] = ~removed[offset : offset + t.numel()].view(t.shape)
        offset += t.numel()
    return masks


def per_tensor_magnitude_masks(
    tensors: Mapping[str, Tensor], sparsity: float | Fraction
) -> dict[str, Tensor]:
    """Keep masks that remove ⌊sparsity·n_i⌋ smallest magnitudes of each tensor separately.

    Args:
        tensors: Named tensors.
        sparsity: Fraction removed from each tensor, in [0, 1].

    Returns:
        ``{name: keep_mask}`` with boolean masks shaped like the tensors (True = kept).
    """
    masks = {}
    for name, t in tensors.items():
        removed = smallest_k_mask(_magnitudes({name: t}), removal_count(t.numel(), sparsity))
        masks[name] = ~removed.view(t.shape)
    return masks

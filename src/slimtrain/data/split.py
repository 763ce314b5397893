"""Seeded, stratified carving of a validation split out of a training set."""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["stratified_split"]


def stratified_split(targets: Tensor, fraction: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Split sample indices into a kept part and a held-out part with the class proportions of ``targets``.

    The held-out part has exactly ``round(fraction * N)`` samples. Each class contributes the floor of its
    share; the remaining slots go to the classes with the largest fractional shares (ties to the lower
    class index). Which samples of a class are held out is drawn from ``generator``.

    Args:
        targets: ``N`` int64 labels (non-negative).
        fraction: share of samples held out, in ``[0, 1)``.
        generator: source of randomness; the same state gives the same split.

    Returns:
        ``(kept, held_out)``: disjoint sorted int64 index tensors whose union is ``0..N-1``.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"split fraction must be in [0, 1), got {fraction}")
    n = targets.shape[0]
    n_held = math.floor(fraction * n + 0.5)
    if n_held == 0:
        return torch.arange(n), torch.arange(0)
    if n_held >= n:
        raise ValueError(f"holding out {n_held} of {n} samples would leave none; lower the fraction")
    counts = torch.bincount(targets).double()
    quota = counts * fraction
    per_class = quota.floor()
    remainder = n_held - int(per_class.sum())
    by_fraction = torch.sort(-(quota - per_class), stable=True).indices
    per_class[by_fraction[:remainder]] += 1
    # Shuffle, then group by class with a stable sort: samples stay in random order within each class.
    perm = torch.randperm(n, generator=generator)
    order = perm[torch.sort(targets[perm], stable=True).indices]
    classes = targets[order]
    class_start = torch.cumsum(counts, 0) - counts
    rank_in_class = torch.arange(n, dtype=torch.float64) - class_start[classes]
    held = rank_in_class < per_class[classes]
    return order[~held].sort().values, order[held].sort().values

"""Derivation of independent, reproducible random generators from tuples of integers."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["derive_generator", "derive_seed"]


def derive_seed(*keys: int) -> int:
    """Mix non-negative integers into one 63-bit seed.

    ``numpy.random.SeedSequence`` hashes its entropy so that nearby keys (epoch 3 vs. 4, rank 0 vs. 1) give
    unrelated streams, unlike ``seed + epoch``. The number of keys is hashed too, because ``SeedSequence``
    alone maps ``(a, b)`` and ``(a, b, 0)`` to the same state.
    """
    if any(k < 0 for k in keys):
        raise ValueError(f"seed keys must be non-negative, got {keys}")
    hi, lo = np.random.SeedSequence([len(keys), *keys]).generate_state(2, dtype=np.uint32)
    return ((int(hi) << 32) | int(lo)) & ((1 << 63) - 1)


def derive_generator(*keys: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with :func:`derive_seed` of ``keys``."""
    return torch.Generator().manual_seed(derive_seed(*keys))

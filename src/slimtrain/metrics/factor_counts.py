"""Parameter counts of factorized layers from their shapes and ranks (metrics.md §3, nnbcd.md §2.4).

Pure functions: they need no model and are checked by hand-computed values. ``n`` is the number of output
rows and ``m`` of input columns of a matrix layer; the counts exclude biases.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def svd_parameter_count(n: int, m: int, rank: int) -> int:
    """Stored parameters of a rank-r matrix layer kept as K = US and L = V: (n + m)·r (DLRT eval count)."""
    _check_positive(n=n, m=m, rank=rank)
    return (n + m) * rank


def dlrt_train_parameter_count(n: int, m: int, rank: int, with_grads: bool = False) -> int:
    """Training-time count of one DLRT-Net layer (Schotthöfer et al., NeurIPS 2022; metrics.md §3).

    K, L (n·r, m·r), U, V (n·r, m·r), Û, V̂ (n·2r, m·2r), Ŝ (2r×2r), M̂, N̂ (2r×r each):
    ``4(n + m)·r + 8r²``. With ``with_grads`` the trainable K, L and Ŝ are counted a second time
    (``+ (n + m)·r + 4r²``), as DLRT-Net's "train with grads" figure does.
    """
    _check_positive(n=n, m=m, rank=rank)
    count = 4 * (n + m) * rank + 8 * rank**2
    if with_grads:
        count += (n + m) * rank + 4 * rank**2
    return count


def tucker_parameter_count(dims: Sequence[int], ranks: Sequence[int]) -> int:
    """Stored parameters of a Tucker tensor: Σ_i n_i·r_i + ∏_i r_i (factors plus core, metrics.md §3)."""
    _check_modes(dims, ranks)
    return sum(n * r for n, r in zip(dims, ranks, strict=True)) + math.prod(ranks)


def tucker_train_parameter_count(
    dims: Sequence[int], ranks: Sequence[int], augmented_ranks: Sequence[int] | None = None
) -> int:
    """Training-time count of one TDLRT Tucker layer (this project's definition, metrics.md §3).

    ``Σ n_i r_i (U_i) + Σ n_i r̂_i (Ũ_i) + ∏ r_i (C) + ∏ r̂_i (C̃) + Σ r̂_i r_i (M_i)``.

    Args:
        dims: Mode sizes n_i (e.g. ``(C_out, C_in, k_h, k_w)``).
        ranks: Tucker ranks r_i.
        augmented_ranks: Augmented ranks r̂_i of the basis-update step; default ``min(2·r_i, n_i)``.
    """
    _check_modes(dims, ranks)
    aug = (
        [min(2 * r, n) for n, r in zip(dims, ranks, strict=True)]
        if augmented_ranks is None
        else augmented_ranks
    )
    _check_modes(dims, aug)
    return (
        sum(n * r for n, r in zip(dims, ranks, strict=True))
        + sum(n * a for n, a in zip(dims, aug, strict=True))
        + math.prod(ranks)
        + math.prod(aug)
        + sum(a * r for a, r in zip(aug, ranks, strict=True))
    )


def tt_ranks(modes: Sequence[int], rank: int) -> list[int]:
    """Capped TT ranks r_0 … r_d for a uniform requested rank (nnbcd.md §2.4).

    r_0 = r_d = 1 and r_k = min(r, ∏_{j≤k} n_j, ∏_{j>k} n_j).
    """
    if not modes or any(n < 1 for n in modes):
        raise ValueError(f"TT modes must be positive integers, got {tuple(modes)}")
    _check_positive(rank=rank)
    inner = [min(rank, math.prod(modes[:k]), math.prod(modes[k:])) for k in range(1, len(modes))]
    return [1, *inner, 1]


def tt_parameter_count(modes: Sequence[int], rank: int) -> int:
    """TT storage Σ_k r_{k−1}·n_k·r_k with capped ranks (nnbcd.md §2.4, metrics.md §3)."""
    r = tt_ranks(modes, rank)
    return sum(r[k] * n * r[k + 1] for k, n in enumerate(modes))


def _check_positive(**values: int) -> None:
    """Raise ``ValueError`` naming the first non-positive value."""
    for key, v in values.items():
        if v < 1:
            raise ValueError(f"{key} must be a positive integer, got {v}")


def _check_modes(dims: Sequence[int], ranks: Sequence[int]) -> None:
    """Check that ``dims`` and ``ranks`` are non-empty, of equal length, with positive entries."""
    if len(dims) != len(ranks) or not dims:
        raise ValueError(f"dims {tuple(dims)} and ranks {tuple(ranks)} must be non-empty and of equal length")
    _check_positive(
        **{f"dims[{i}]": n for i, n in enumerate(dims)}, **{f"ranks[{i}]": r for i, r in enumerate(ranks)}
    )

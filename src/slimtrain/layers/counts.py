"""Parameter counts of factorized layers from their shapes and ranks, defined once (docs/metrics.md).

Pure functions on shapes and ranks; the layers' own count methods and :mod:`slimtrain.metrics` use them.
``n`` is the number of output rows and ``m`` of input columns of a matrix layer; the counts exclude biases.
Matrix counts follow DLRT (Schotthöfer et al., *Low-rank lottery tickets*, NeurIPS 2022, arXiv:2205.13571),
Tucker counts TDLRT (Zangrando et al., arXiv:2305.19059). Tensor-train counts (Oseledets, *Tensor-train
decomposition*, SIAM J. Sci. Comput. 2011) are :func:`slimtrain.algebra.tt.tt_ranks` and
:func:`~slimtrain.algebra.tt.tt_storage`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def svd_parameter_count(n: int, m: int, rank: int) -> int:
    """Stored parameters of a rank-r matrix layer kept as K = US and L = V: ``(n + m)·r``.

    The DLRT eval count (Schotthöfer et al., NeurIPS 2022; docs/metrics.md); also the weights of a deployed
    SVD pair (k×k conv then 1×1, or two linears) with ``m = C_in·k_h·k_w``.
    """
    _check_positive(n=n, m=m, rank=rank)
    return (n + m) * rank


def dlrt_train_parameter_count(n: int, m: int, rank: int, with_grads: bool = False) -> int:
    """Training-time count of one DLRT-Net layer (Schotthöfer et al., NeurIPS 2022; docs/metrics.md).

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
    """Stored parameters of a Tucker tensor: ``Σ_i n_i·r_i + ∏_i r_i`` (factors plus core).

    The TDLRT eval count (Zangrando et al., arXiv:2305.19059; docs/metrics.md), spatial factors included.
    A deployed three-stage convolution multiplies the spatial factors into its k×k core and so holds
    ``k_h² + k_w²`` fewer weights when the spatial ranks are full.
    """
    _check_modes(dims, ranks)
    return sum(n * r for n, r in zip(dims, ranks, strict=True)) + math.prod(ranks)


def tucker_augmented_ranks(ranks: Sequence[int], caps: Sequence[int]) -> tuple[int, ...]:
    """Widths after a basis augmentation: ``r̂_i = max(r_i, min(2·r_i, cap_i))``.

    The cap ``r̄_i`` is ``r_max,i`` (the default of :class:`slimtrain.lowrank.TDLRT`, ``aug_cap="rmax"``),
    ``n_i`` (the BUG theory, ``aug_cap="n"``) or ``r_i`` for a mode that does not adapt (Zangrando et al.,
    arXiv:2305.19059; docs/tdlrt.md).
    """
    _check_modes(caps, ranks)
    return tuple(max(r, min(2 * r, cap)) for r, cap in zip(ranks, caps, strict=True))


def tucker_train_parameter_count(dims: Sequence[int], ranks: Sequence[int], augmented: Sequence[int]) -> int:
    """Training-time count of one TDLRT Tucker layer (this project's definition, docs/metrics.md).

    ``Σ n_i r_i (U_i) + Σ n_i r̂_i (Ũ_i) + ∏ r_i (C) + ∏ r̂_i (C̃) + Σ r̂_i r_i (M_i)``.

    Args:
        dims: Mode sizes n_i (e.g. ``(C_out, C_in, k_h, k_w)``).
        ranks: Tucker ranks r_i.
        augmented: Augmented ranks r̂_i of the basis-update step, from :func:`tucker_augmented_ranks` with
            the cap the training used (a layer's ``augmented_ranks(aug_cap)``). There is no default: the cap
            changes the count (a 64→64 3×3 conv at ranks 20 counts 20,806 with ``r_max`` = 32 and 27,334
            with ``n`` = 64).
    """
    _check_modes(dims, ranks)
    _check_modes(dims, augmented)
    return (
        sum(n * r for n, r in zip(dims, ranks, strict=True))
        + sum(n * a for n, a in zip(dims, augmented, strict=True))
        + math.prod(ranks)
        + math.prod(augmented)
        + sum(a * r for a, r in zip(augmented, ranks, strict=True))
    )


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

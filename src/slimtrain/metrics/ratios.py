"""Compression ratios and their conversions (docs/metrics.md#populations and #ratios).

The same words name different quantities in the papers; here each has one name:

- ``compression_ratio`` (×, ≥ 1) = N_ref / N_stored (ShrinkBench; SFW's "compression rate" 1/(1 − s));
- ``storage_fraction`` (≤ 1) = N_stored / N_ref (NN-BCD's "CR");
- ``cr_percent`` (%) = 100·(1 − N_lowrank/N_full) (DLRT's "compression rate").
"""

from __future__ import annotations


def compression_ratio(n_ref: float, n_stored: float) -> float:
    """compression_ratio = N_ref / N_stored (× form, docs/metrics.md#ratios).

    Raises:
        ValueError: If ``n_stored`` is not positive.
    """
    if n_stored <= 0:
        raise ValueError(f"n_stored must be positive, got {n_stored}")
    return n_ref / n_stored


def storage_fraction(n_stored: float, n_ref: float) -> float:
    """storage_fraction = N_stored / N_ref = 1/compression_ratio (NN-BCD's CR, docs/metrics.md#ratios).

    Raises:
        ValueError: If ``n_ref`` is not positive.
    """
    if n_ref <= 0:
        raise ValueError(f"n_ref must be positive, got {n_ref}")
    return n_stored / n_ref


def compression_ratio_from_sparsity(sparsity: float) -> float:
    """compression_ratio = 1/(1 − sparsity) on the same population (docs/metrics.md#ratios).

    Raises:
        ValueError: If ``sparsity`` is outside [0, 1).
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must lie in [0, 1), got {sparsity}")
    return 1.0 / (1.0 - sparsity)


def cr_percent(n_lowrank: float, n_full: float, decimals: int | None = None) -> float:
    """DLRT compression rate in percent: 100·(1 − N_lowrank/N_full) (docs/metrics.md#ratios).

    Args:
        n_lowrank: Parameters of the compressed model (stored, or the training count).
        n_full: Parameters of the reference.
        decimals: Round the ratio N_lowrank/N_full to this many decimals before converting to percent, as
            the DLRT-Net code does with 3; ``None`` keeps it exact.

    Raises:
        ValueError: If ``n_full`` is not positive.
    """
    if n_full <= 0:
        raise ValueError(f"n_full must be positive, got {n_full}")
    ratio = n_lowrank / n_full
    if decimals is not None:
        ratio = round(ratio, decimals)
    return 100.0 * (1.0 - ratio)


def level_rel_error(requested: float, achieved: float) -> float:
    """Relative error of an achieved compression level: |achieved − requested| / requested (docs/metrics.md).

    Raises:
        ValueError: If ``requested`` is zero.
    """
    if requested == 0:
        raise ValueError("requested level must be non-zero")
    return abs(achieved - requested) / abs(requested)

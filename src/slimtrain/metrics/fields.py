"""Result rows written by earlier versions, read with today's field names and definitions (docs/metrics.md).

Earlier sweep rows (``sweep-*.json``, ``compare.json``) had no ``storage_fraction_prunable``, and their
``sparsity_*`` of a factorized or tensor-train model was ``1 − stored/dense``: the fraction of the dense
layer not stored, i.e. ``1 −`` the storage fraction, not a fraction of zeros. :func:`upgrade_row` turns such a
row into today's fields, so reports and sweeps keep reading old files.
"""

from __future__ import annotations

from typing import Any

FACTORIZED_ROW_KEYS = (
    "cr_percent_eval_factorized_only",
    "cr_percent_eval_dlrt_convention",
    "ranks_per_layer",
)
"""Fields that :func:`~slimtrain.metrics.summarize` writes only for models with factorized layers."""
_STORAGE_DERIVED = ("sparsity_all", "sparsity_prunable", "sparsity_per_layer")


def upgrade_row(row: dict[str, Any]) -> dict[str, Any]:
    """Return ``row`` with today's fields (a new dict; rows that have them come back equal).

    A row without ``storage_fraction_prunable`` gets it: ``1 / compression_ratio_prunable`` for a single run's
    row (exact, same population and state), ``1 − sparsity_prunable`` for a row aggregated over seeds (the
    mean of the per-seed fractions, with ``sparsity_prunable_std`` as its standard deviation). If the row
    describes a factorized model, its old ``sparsity_*`` fields (and their ``_std``) are dropped: they were
    storage, not zeros, and the zeros were not recorded.

    Args:
        row: A sweep row, or an aggregated row of ``compare.json``, from any version.
    """
    if "storage_fraction_prunable" in row:
        return dict(row)
    out = dict(row)
    ratio, sparsity = row.get("compression_ratio_prunable"), row.get("sparsity_prunable")
    if "seeds" not in row and isinstance(ratio, int | float) and ratio > 0:
        out["storage_fraction_prunable"] = 1.0 / ratio
    elif isinstance(sparsity, int | float):
        out["storage_fraction_prunable"] = 1.0 - sparsity
        if isinstance(row.get("sparsity_prunable_std"), int | float):
            out["storage_fraction_prunable_std"] = row["sparsity_prunable_std"]
    if any(key in row for key in FACTORIZED_ROW_KEYS):
        for key in _STORAGE_DERIVED:
            out.pop(key, None)
            out.pop(f"{key}_std", None)
    return out

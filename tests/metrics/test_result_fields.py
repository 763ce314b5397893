"""Rows written before the storage fraction existed are read with today's fields (upgrade_row)."""

import pytest

from slimtrain.metrics import upgrade_row


def test_factorized_row_gets_its_storage_fraction_and_loses_its_storage_sparsity():
    """An old factorized row: sparsity_* were 1 − stored/dense, so they go; storage_fraction_prunable is
    1/compression_ratio_prunable.
    """
    old = {
        "requested_level": 0.1,
        "sparsity_all": 0.3,
        "sparsity_prunable": 0.3,
        "sparsity_per_layer": {"0.factors": 0.6},
        "compression_ratio_prunable": 1 / 0.7,
        "ranks_per_layer": {"0": [4, 4]},
    }
    new = upgrade_row(old)
    assert new["storage_fraction_prunable"] == pytest.approx(0.7)
    assert not any(key.startswith("sparsity") for key in new)
    assert old["sparsity_prunable"] == 0.3  # the input is left as it was


def test_masked_and_aggregated_rows():
    """A masked row keeps its sparsity (zeros); an aggregated row uses 1 − mean sparsity and its std."""
    masked = upgrade_row({"sparsity_prunable": 0.9, "compression_ratio_prunable": 10.0})
    assert masked["sparsity_prunable"] == 0.9 and masked["storage_fraction_prunable"] == pytest.approx(0.1)
    aggregated = upgrade_row(
        {"seeds": 2, "sparsity_prunable": 0.8, "sparsity_prunable_std": 0.01, "compression_ratio_prunable": 6}
    )
    assert aggregated["storage_fraction_prunable"] == pytest.approx(0.2)
    assert aggregated["storage_fraction_prunable_std"] == 0.01


def test_current_rows_are_unchanged():
    """A row with today's fields comes back equal (a copy)."""
    row = {"sparsity_prunable": 0.0, "storage_fraction_prunable": 0.4, "ranks_per_layer": {"0": 3}}
    assert upgrade_row(row) == row and upgrade_row(row) is not row

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from slimtrain.metrics import (
    compression_ratio,
    compression_ratio_from_sparsity,
    count_parameters,
    cr_percent,
    level_rel_error,
    storage_fraction,
)


@given(n=st.integers(1, 10**7), data=st.data())
def test_conversions_agree(n, data):
    """compression_ratio = 1/(1 − sparsity) = 1/storage_fraction for the same population (spec §8.2)."""
    nnz = data.draw(st.integers(1, n))
    sparsity = 1 - nnz / n
    ratio = compression_ratio(n, nnz)
    assert ratio == pytest.approx(compression_ratio_from_sparsity(sparsity), rel=1e-9)
    assert ratio == pytest.approx(1 / storage_fraction(nnz, n), rel=1e-12)
    assert ratio >= 1 >= storage_fraction(nnz, n)


@given(st.integers(0, 2**16 - 1), st.floats(0.0, 0.95))
def test_conversions_on_a_masked_model(seed, level):
    """On a masked model, ratio = 1/(1 − sparsity) = 1/storage_fraction over `all` and `prunable`."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(torch.rand_like(p) > level)
            p.view(-1)[0] = 1.0  # keep every tensor non-empty
    for population in ("all", "prunable"):
        t = count_parameters(model, population)
        ratio = compression_ratio(t.dense, t.nonzero)
        assert ratio == pytest.approx(compression_ratio_from_sparsity(t.sparsity))
        assert ratio == pytest.approx(1 / storage_fraction(t.nonzero, t.dense))


def test_cr_percent_rounds_ratio_before_percent():
    """DLRT c.r. = 100·(1 − N_low/N_full); with decimals=3 the ratio is rounded first (0.12345 → 0.123)."""
    assert cr_percent(12345, 100000) == pytest.approx(87.655)
    assert cr_percent(12345, 100000, decimals=3) == pytest.approx(87.7)


def test_level_rel_error_and_bad_inputs():
    """rel_error = |achieved − requested|/requested; invalid denominators and sparsity 1 are rejected."""
    assert level_rel_error(0.9, 0.891) == pytest.approx(0.01)
    for call in (
        lambda: compression_ratio(10, 0),
        lambda: storage_fraction(1, 0),
        lambda: compression_ratio_from_sparsity(1.0),
        lambda: cr_percent(1, 0),
        lambda: level_rel_error(0, 1),
    ):
        with pytest.raises(ValueError):
            call()

"""Tests of the hard-threshold projection (spec nnbcd.md §2.5, §7.5)."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from slimtrain.bcd.prune import hard_threshold


@given(
    rows=st.integers(1, 12),
    cols=st.integers(1, 12),
    sparsity=st.floats(0.0, 0.99),
    seed=st.integers(0, 999),
    ties=st.booleans(),
)
def test_topk_keeps_exact_count_of_largest_and_is_idempotent(rows, cols, sparsity, seed, ties):
    """H_s keeps exactly n − ⌊s·n⌋ entries by magnitude and is idempotent.

    Every kept entry is at least as large in magnitude as any dropped one, ties go to the lower index, and
    H_s(H_s(W)) = H_s(W).
    """
    w = torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    if ties:
        w = w.round()  # many equal magnitudes, including zeros
    pruned = hard_threshold(w, sparsity)
    n = w.numel()
    keep = n - math.floor(sparsity * n)
    kept = torch.zeros(n, dtype=torch.bool)
    kept[torch.argsort(w.abs().reshape(-1), descending=True, stable=True)[:keep]] = True
    assert torch.equal(pruned.reshape(-1), torch.where(kept, w.reshape(-1), 0.0))
    if keep < n:
        assert w.reshape(-1)[kept].abs().min() >= w.reshape(-1)[~kept].abs().max()
    assert torch.equal(hard_threshold(pruned, sparsity), pruned)
    assert torch.equal(hard_threshold(w, sparsity), pruned)


def test_topk_count_without_ties():
    """Without ties or zeros the number of non-zeros is exactly n − ⌊s·n⌋."""
    w = torch.arange(1, 101, dtype=torch.float64).reshape(10, 10) * torch.tensor([1.0, -1.0]).repeat(
        50
    ).reshape(10, 10)
    assert int(torch.count_nonzero(hard_threshold(w, 0.9))) == 10
    assert int(torch.count_nonzero(hard_threshold(w, 0.333))) == 100 - 33


def test_quantile_rule_matches_reference_definition():
    """The reference rule zeroes exactly the entries with W² < quantile(W², s)."""
    w = torch.randn(7, 9, dtype=torch.float64)
    pruned = hard_threshold(w, 0.7, rule="quantile")
    threshold = torch.quantile((w**2).reshape(-1), 0.7)
    assert torch.equal(pruned == 0, w**2 < threshold)


def test_bad_arguments_are_rejected():
    """Sparsity outside [0, 1) and unknown rules raise ValueError naming the value."""
    with pytest.raises(ValueError, match="sparsity"):
        hard_threshold(torch.zeros(3), 1.0)
    with pytest.raises(ValueError, match="median"):
        hard_threshold(torch.zeros(3), 0.5, rule="median")

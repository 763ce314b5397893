"""Exact magnitude masks: global bottom-k with deterministic ties, per-layer masks, exact counts."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from slimtrain.pruning import (
    per_tensor_magnitude_masks,
    removal_count,
    smallest_k_mask,
    smallest_magnitude_masks,
)


@given(st.lists(st.integers(0, 4), min_size=1, max_size=60), st.data())
def test_smallest_k_equals_a_stable_sort_prefix(values: list[int], data: st.DataObject) -> None:
    """smallest_k_mask selects exactly the first k indices of a stable ascending sort (ties by position),
    infinite values included, NaN counted as +inf.
    """
    v = torch.tensor(values, dtype=torch.float64)
    v[v == 4] = torch.nan  # counts as +inf: the count stays exact
    v[v == 3] = torch.inf
    k = data.draw(st.integers(0, len(values)))
    expected = torch.zeros(len(values), dtype=torch.bool)
    expected[torch.sort(torch.where(v.isnan(), torch.inf, v), stable=True).indices[:k]] = True
    assert torch.equal(smallest_k_mask(v, k), expected)


def test_global_masks_split_back_per_tensor() -> None:
    """Global masks have each tensor's shape and remove the globally smallest entries across tensors."""
    tensors = {"a": torch.tensor([[5.0, -1.0], [0.5, 3.0]]), "b": torch.tensor([-0.2, 4.0, 2.0])}
    masks = smallest_magnitude_masks(tensors, 3)
    assert torch.equal(masks["a"], torch.tensor([[True, False], [False, True]]))
    assert torch.equal(masks["b"], torch.tensor([False, True, True]))


@given(st.floats(0.0, 1.0))
def test_layerwise_masks_remove_the_fraction_of_each_layer(sparsity: float) -> None:
    """Per-layer masks remove ⌊s·n_i⌋ entries of every tensor."""
    tensors = {"a": torch.randn(3, 5), "b": torch.randn(7)}
    masks = per_tensor_magnitude_masks(tensors, sparsity)
    for name, t in tensors.items():
        assert int((~masks[name]).sum()) == removal_count(t.numel(), sparsity)


def test_removal_count_is_exact_for_decimal_fractions() -> None:
    """0.3 of 10 is 3 (not 2 from 0.3 being 0.2999... in binary), and bad fractions are rejected."""
    assert removal_count(10, 0.3) == 3
    assert removal_count(1000, 0.975) == 975
    with pytest.raises(ValueError, match=r"1\.5"):
        removal_count(10, 1.5)

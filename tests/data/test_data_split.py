"""Stratified, seeded validation splits."""

import torch
from hypothesis import given
from hypothesis import strategies as st

from slimtrain.data.seeding import derive_generator, derive_seed
from slimtrain.data.split import stratified_split


@given(
    labels=st.lists(st.integers(0, 4), min_size=2, max_size=200),
    fraction=st.floats(0.0, 0.9),
    seed=st.integers(0, 2**31),
)
def test_split_partitions_indices_with_exact_size(labels, fraction, seed):
    """Kept and held-out are disjoint, cover 0..N-1, and held-out has round(fraction*N) samples."""
    targets = torch.tensor(labels)
    n = len(labels)
    n_held = int(fraction * n + 0.5)
    if n_held >= n:
        return
    kept, held = stratified_split(targets, fraction, derive_generator(seed))
    assert len(held) == n_held
    assert torch.equal(torch.cat([kept, held]).sort().values, torch.arange(n))


@given(counts=st.lists(st.integers(1, 40), min_size=1, max_size=6), fraction=st.floats(0.05, 0.8))
def test_split_is_stratified(counts, fraction):
    """Each class contributes floor or ceil of its share to the held-out part."""
    targets = torch.cat([torch.full((c,), k) for k, c in enumerate(counts)])
    n_held = int(fraction * len(targets) + 0.5)
    if n_held >= len(targets):
        return
    _, held = stratified_split(targets, fraction, derive_generator(0))
    per_class = torch.bincount(targets[held], minlength=len(counts))
    for k, c in enumerate(counts):
        assert abs(per_class[k].item() - c * fraction) < 1.0 + 1e-9


def test_split_determinism_and_seed_dependence():
    """The same seed gives the same split; another seed gives a different one."""
    targets = torch.arange(500) % 10
    a = stratified_split(targets, 0.2, derive_generator(3))[1]
    b = stratified_split(targets, 0.2, derive_generator(3))[1]
    c = stratified_split(targets, 0.2, derive_generator(4))[1]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_zero_fraction_holds_out_nothing():
    """Fraction 0 keeps every sample."""
    kept, held = stratified_split(torch.arange(7) % 2, 0.0, derive_generator(0))
    assert torch.equal(kept, torch.arange(7)) and held.numel() == 0


def test_derived_seeds_separate_trailing_zero_keys():
    """derive_seed distinguishes key tuples that differ only by trailing zeros."""
    assert len({derive_seed(1, 2), derive_seed(1, 2, 0), derive_seed(1, 2, 0, 0)}) == 3

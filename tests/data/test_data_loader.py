"""BatchLoader: determinism, DDP sharding and batch counts."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from slimtrain.data import ArrayDataset, BatchLoader, RandomCrop


def _dataset(n):
    # Each input carries its own index so batches reveal which samples they hold.
    inputs = torch.arange(n, dtype=torch.float32).reshape(n, 1, 1, 1)
    return ArrayDataset(inputs, torch.arange(n) % 3, allow_empty=True)


def _ids(batch):
    return batch[0].flatten().long()


@given(
    n=st.integers(0, 90),
    batch_size=st.integers(1, 12),
    world_size=st.integers(1, 4),
    drop_last=st.booleans(),
    shuffle=st.booleans(),
    epoch=st.integers(0, 3),
)
def test_rank_shards_are_disjoint_and_union_is_the_single_process_batch(
    n, batch_size, world_size, drop_last, shuffle, epoch
):
    """Ranks' batches are disjoint, equal-sized, and concatenate to the single-process B*W batch.

    For a truncated last batch, the concatenation is a prefix of it missing fewer than W samples.
    """
    ds = _dataset(n)
    single = BatchLoader(ds, batch_size * world_size, shuffle=shuffle, seed=5, drop_last=drop_last)
    single.set_epoch(epoch)
    ranks = []
    for r in range(world_size):
        loader = BatchLoader(
            ds, batch_size, shuffle=shuffle, seed=5, drop_last=drop_last, rank=r, world_size=world_size
        )
        loader.set_epoch(epoch)
        ranks.append([_ids(b) for b in loader])
        assert len(ranks[-1]) == len(loader)
    assert len({len(r) for r in ranks}) == 1
    reference = [_ids(b) for b in single]
    for step, shards in enumerate(zip(*ranks, strict=True)):
        assert len({len(s) for s in shards}) == 1
        union = torch.cat(shards)
        assert len(set(union.tolist())) == len(union)
        full = reference[step]
        if step < len(reference) - 1 or len(full) == batch_size * world_size:
            assert torch.equal(union, full)
        else:
            assert torch.equal(union, full[: len(union)]) and len(full) - len(union) < world_size


@given(n=st.integers(0, 60), batch_size=st.integers(1, 9), world_size=st.integers(1, 3))
def test_len_counts_batches(n, batch_size, world_size):
    """len() is floor(N/G) with drop_last, else that plus one when the remainder has >= W samples."""
    g = batch_size * world_size
    for drop_last, expected in ((True, n // g), (False, n // g + (n % g >= world_size))):
        loader = BatchLoader(
            _dataset(n), batch_size, shuffle=False, drop_last=drop_last, world_size=world_size
        )
        assert len(loader) == expected == sum(1 for _ in loader)


def test_one_epoch_visits_every_sample_once():
    """With one rank and no drop_last an epoch is a permutation of the dataset."""
    loader = BatchLoader(_dataset(37), 5, shuffle=True, seed=1)
    seen = torch.cat([_ids(b) for b in loader])
    assert torch.equal(seen.sort().values, torch.arange(37))


def test_order_depends_only_on_seed_and_epoch():
    """Same (seed, epoch) gives the same order, another epoch or seed another; no shuffle keeps order."""

    def order(seed, epoch, shuffle=True):
        loader = BatchLoader(_dataset(50), 50, shuffle=shuffle, seed=seed)
        loader.set_epoch(epoch)
        return _ids(next(iter(loader)))

    assert torch.equal(order(0, 1), order(0, 1))
    assert not torch.equal(order(0, 1), order(0, 2))
    assert not torch.equal(order(0, 1), order(1, 1))
    assert torch.equal(order(0, 3, shuffle=False), torch.arange(50))


def test_targets_stay_aligned_with_inputs():
    """Every yielded target is the label of the yielded input."""
    ds = _dataset(20)
    for x, y in BatchLoader(ds, 6, shuffle=True, seed=2):
        assert torch.equal(y, x.flatten().long() % 3)


def test_transform_randomness_is_reproducible_and_per_step():
    """Augmented batches repeat exactly for the same (seed, epoch) and differ between steps."""
    ds = ArrayDataset(torch.randn(16, 1, 6, 6), torch.zeros(16, dtype=torch.int64))

    def run(epoch):
        loader = BatchLoader(ds, 8, shuffle=False, seed=3, transform=RandomCrop(2))
        loader.set_epoch(epoch)
        return [x for x, _ in loader]

    a, b, c = run(0), run(0), run(1)
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))
    assert not all(torch.equal(p, q) for p, q in zip(a, c, strict=True))


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 1, "world_size": 0}, "world_size"),
        ({"batch_size": 1, "rank": 2, "world_size": 2}, "rank"),
        ({"batch_size": 1, "seed": -1}, "seed"),
    ],
)
def test_invalid_arguments_are_rejected(kwargs, word):
    """Bad batch size, world size, rank or seed raise ValueError naming the argument."""
    with pytest.raises(ValueError, match=word):
        BatchLoader(_dataset(4), shuffle=False, **kwargs)

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from slimtrain.metrics import (
    dlrt_train_parameter_count,
    storage_fraction,
    svd_parameter_count,
    tt_ranks,
    tt_storage,
    tucker_augmented_ranks,
    tucker_parameter_count,
    tucker_train_parameter_count,
)

# nnbcd.md §2.4 mode tuples: MLP4 561→1024→1024→1024→512→6 (4 TT hidden layers, output dense, no biases).
MLP4_TT = [
    ((6, 22, 34, 2, 2, 2, 2, 2, 2, 2), 1024 * 561),
    ((4,) * 10, 1024 * 1024),
    ((4,) * 10, 1024 * 1024),
    ((4,) * 9 + (2,), 512 * 1024),
]
MLP4_DENSE_OUTPUT = 6 * 512
CNN_TT = [((26, 26, 4, 4, 4, 4, 4, 2, 2, 2), 1024 * 5408), ((4,) * 10, 1024 * 1024)]


def test_nnbcd_mlp4_rank80_storage_fractions():
    """MLP4 at TT rank 80: CR₂ = 0.1668 (TT layers) and CR₁ = 0.1676 (all layers), spec §8.5."""
    for modes, size in MLP4_TT:
        assert math.prod(modes) == size
    tt = sum(tt_storage(modes, 80) for modes, _ in MLP4_TT)
    dense = sum(size for _, size in MLP4_TT)
    assert round(storage_fraction(tt, dense), 4) == 0.1668
    assert round(storage_fraction(tt + MLP4_DENSE_OUTPUT, dense + MLP4_DENSE_OUTPUT), 4) == 0.1676


@pytest.mark.parametrize(
    ("rank", "cr2"), [(40, 0.0128), (80, 0.0370), (140, 0.0878), (220, 0.1784), (300, 0.2807)]
)
def test_nnbcd_cnn_storage_fractions(rank, cr2):
    """CNN FC1/FC2 TT layers reproduce the notebook CRs over compressed layers (nnbcd.md §7.4)."""
    tt = sum(tt_storage(modes, rank) for modes, _ in CNN_TT)
    assert round(storage_fraction(tt, sum(size for _, size in CNN_TT)), 4) == cr2


@given(st.lists(st.integers(1, 6), min_size=1, max_size=6), st.integers(1, 50))
def test_tt_ranks_are_capped(modes, rank):
    """r_0 = r_d = 1 and r_k = min(r, ∏_{j≤k} n_j, ∏_{j>k} n_j); full rank stores at least the dense size."""
    r = tt_ranks(modes, rank)
    assert r[0] == r[-1] == 1 and len(r) == len(modes) + 1
    for k in range(1, len(modes)):
        assert r[k] == min(rank, math.prod(modes[:k]), math.prod(modes[k:]))
    if rank >= math.prod(modes):
        assert tt_storage(modes, rank) >= math.prod(modes)


def test_tt_hand_example():
    """Modes (2, 3, 4) at rank 5: ranks 1, 2, 4, 1 → 1·2·2 + 2·3·4 + 4·4·1 = 44."""
    assert tt_ranks((2, 3, 4), 5) == [1, 2, 4, 1]
    assert tt_storage((2, 3, 4), 5) == 44


@given(st.integers(1, 500), st.integers(1, 500), st.integers(1, 50))
def test_dlrt_counts(n, m, r):
    """Eval count (n + m)r; train count 4(n + m)r + 8r²; with grads K, L, Ŝ once more (spec §8.4)."""
    assert svd_parameter_count(n, m, r) == (n + m) * r
    assert dlrt_train_parameter_count(n, m, r) == 4 * (n + m) * r + 8 * r * r
    assert dlrt_train_parameter_count(n, m, r, with_grads=True) == 5 * (n + m) * r + 12 * r * r


def test_tucker_counts_by_hand():
    """Tucker (64, 64, 3, 3) at (16, 16, 3, 3): 4,370 stored; training adds Ũ, C̃, M with r̂ = min(2r, n)."""
    dims, ranks = (64, 64, 3, 3), (16, 16, 3, 3)
    assert tucker_parameter_count(dims, ranks) == 4_370
    # r̂ = (32, 32, 3, 3): Σn r̂ = 2·2048 + 18; ∏r̂ = 9216; Σ r̂ r = 2·512 + 18
    expected = 4_370 + (4096 + 18) + 9216 + (1024 + 18)
    assert tucker_train_parameter_count(dims, ranks, tucker_augmented_ranks(ranks, dims)) == expected


def test_bad_shapes_are_named():
    """Non-positive sizes and mismatched dims/ranks raise errors naming the culprit."""
    with pytest.raises(ValueError, match="rank"):
        svd_parameter_count(3, 3, 0)
    with pytest.raises(ValueError, match="equal length"):
        tucker_parameter_count((3, 3), (1,))
    with pytest.raises(ValueError, match=r"dims\[1\]"):
        tucker_parameter_count((3, 0), (1, 1))

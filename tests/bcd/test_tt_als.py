"""Tests of the ALS refit of TT cores and of the TT copy's safeguard (spec nnbcd.md §2.4, §5)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from slimtrain.algebra.tt import tt_reconstruct, tt_svd, tt_svd_matrix
from slimtrain.bcd import TensorTrainCopy
from slimtrain.bcd.tt_als import tt_als_sweep

DT = torch.float64


@settings(max_examples=40, deadline=None)
@given(
    modes=st.lists(st.integers(1, 4), min_size=1, max_size=5),
    rank=st.integers(1, 4),
    noise=st.floats(0.0, 2.0),
    seed=st.integers(0, 999),
)
def test_sweep_never_moves_away_and_keeps_the_ranks(modes, rank, noise, seed):
    """Starting from the TT-SVD cores of one tensor, a sweep towards another never increases the error,
    and every core keeps its shape.
    """
    gen = torch.Generator().manual_seed(seed)
    start = torch.randn(*modes, generator=gen, dtype=DT)
    target = start + noise * torch.randn(*modes, generator=gen, dtype=DT)
    cores = tt_svd(start, rank).cores
    refit = tt_als_sweep(target, cores)
    before = torch.linalg.norm(target - tt_reconstruct(cores))
    assert torch.linalg.norm(target - tt_reconstruct(refit)) <= before * (1 + 1e-12) + 1e-12
    assert [c.shape for c in refit] == [c.shape for c in cores]


def test_exact_tt_tensor_is_a_fixed_point_and_repeated_sweeps_converge():
    """A tensor of TT rank r is reproduced exactly from its own cores; from other cores of that rank,
    repeated sweeps drive the error to zero.
    """
    gen = torch.Generator().manual_seed(0)
    shape = (3, 4, 4, 3)
    core_shapes = [(1, 3, 2), (2, 4, 2), (2, 4, 2), (2, 3, 1)]
    truth = tt_reconstruct([torch.randn(*s, generator=gen, dtype=DT) for s in core_shapes])
    assert truth.shape == shape
    own = tt_svd(truth, 2).cores
    assert torch.allclose(tt_reconstruct(tt_als_sweep(truth, own)), truth, atol=1e-10)
    cores = tt_svd(torch.randn(*shape, generator=gen, dtype=DT), 2).cores
    for _ in range(30):
        cores = tt_als_sweep(truth, cores)
    assert torch.linalg.norm(truth - tt_reconstruct(cores)) < 1e-6 * torch.linalg.norm(truth)


def test_mismatched_cores_are_refused():
    """Cores whose modes differ from the tensor's shape are refused, naming both."""
    cores = tt_svd(torch.randn(4, 4, dtype=DT), 2).cores
    with pytest.raises(ValueError, match=r"\(4, 4\).*\(2, 8\)"):
        tt_als_sweep(torch.randn(2, 8, dtype=DT), cores)


def _copy_with_cores(modes, rank, weight, cores, safeguard=True):
    copy = TensorTrainCopy(modes, rank, safeguard=safeguard)
    copy.reset(weight)
    copy.load_state_dict({"cores": cores, "shape": list(weight.shape), "rejected_updates": 0})
    return copy


@pytest.mark.parametrize("safeguard", [True, False])
def test_safeguard_refits_when_tt_svd_is_worse(safeguard):
    """Cores already refitted to W by ALS are closer to W than TT-SVD(W). Updating with that W: the
    safeguard rejects TT-SVD but still moves the copy, to an ALS refit no farther from W; without the
    safeguard the farther TT-SVD cores are taken (the reference behaviour).
    """
    gen = torch.Generator().manual_seed(0)
    modes, rank = (4, 4, 4, 4, 4, 6), 3
    weight = torch.randn(64, 96, generator=gen, dtype=DT)
    cores = tt_svd_matrix(weight, modes, rank).cores
    for _ in range(2):
        cores = tt_als_sweep(weight.reshape(modes), cores)
    copy = _copy_with_cores(modes, rank, weight, cores, safeguard)
    before = copy.matrix.clone()
    svd_error = torch.linalg.norm(
        weight - tt_reconstruct(tt_svd_matrix(weight, modes, rank).cores).reshape(64, 96)
    )
    assert torch.linalg.norm(weight - before) < svd_error
    copy.update(weight)
    after = torch.linalg.norm(weight - copy.matrix)
    if safeguard:
        assert copy.rejected_updates == 1
        assert not torch.equal(copy.matrix, before)
        assert after <= torch.linalg.norm(weight - before)
    else:
        assert copy.rejected_updates == 0
        assert torch.isclose(after, svd_error)


def test_safeguarded_copy_never_moves_away_from_a_drifting_weight():
    """Over updates of a drifting W pulled towards the copy (as the τ-term does), every update leaves the
    copy no farther from the new W than the previous copy.
    """
    gen = torch.Generator().manual_seed(1)
    modes, rank = (4, 4, 4, 4, 4, 4), 2
    weight = torch.randn(64, 64, generator=gen, dtype=DT)
    copy = TensorTrainCopy(modes, rank)
    copy.reset(weight)
    for _ in range(20):
        weight = 0.9 * copy.matrix + 0.1 * weight + 0.05 * torch.randn(64, 64, generator=gen, dtype=DT)
        old = copy.matrix.clone()
        copy.update(weight)
        assert torch.linalg.norm(weight - copy.matrix) <= torch.linalg.norm(weight - old) * (1 + 1e-12)

"""Tests of the SPD solves (spec nnbcd.md §2.8, §7.8)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from slimtrain.bcd.linalg import cholesky_factor, solve_shifted_gram, solve_spd_left, solve_spd_right

DT = torch.float64


@settings(max_examples=20)
@given(n=st.integers(1, 15), k=st.integers(1, 6), shift=st.floats(1e-3, 10), seed=st.integers(0, 999))
def test_left_and_right_solves_satisfy_their_equations(n, k, shift, seed):
    """A·X = B and X·A = Bᵀ-shaped systems are solved to 1e-10 for SPD A = ρVVᵀ + shift·I."""
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(n, 2 * n, generator=gen, dtype=DT)
    a = v @ v.T + shift * torch.eye(n, dtype=DT)
    b = torch.randn(n, k, generator=gen, dtype=DT)
    scale = max(1.0, float(b.abs().max()))
    assert (a @ solve_spd_left(a, b) - b).abs().max() < 1e-10 * scale * float(a.abs().max())
    assert (solve_spd_right(b.T, a) @ a - b.T).abs().max() < 1e-10 * scale * float(a.abs().max())


@settings(max_examples=20)
@given(
    m=st.integers(1, 12), n=st.integers(1, 12), rho=st.floats(0.05, 10), gamma=st.floats(0.05, 10),
    seed=st.integers(0, 999),
)  # fmt: skip
def test_woodbury_path_equals_direct_solve(m, n, rho, gamma, seed):
    """(ρWᵀW + γI)X = R is solved to 1e-10 whichever of the direct or Woodbury paths the shape selects."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(m, n, generator=gen, dtype=DT)
    r = torch.randn(n, 3, generator=gen, dtype=DT)
    x = solve_shifted_gram(w, r, rho, gamma)
    system = rho * w.T @ w + gamma * torch.eye(n, dtype=DT)
    assert (system @ x - r).abs().max() < 1e-10 * max(1.0, float(system.abs().max()))


def test_jitter_rescues_a_singular_psd_matrix_and_rejects_an_indefinite_one():
    """A rank-deficient PSD matrix factorises after jitter; an indefinite matrix raises LinAlgError."""
    v = torch.randn(6, 2, dtype=DT)
    factor = cholesky_factor(v @ v.T)
    assert torch.allclose(factor @ factor.T, v @ v.T, atol=1e-6)
    with pytest.raises(torch.linalg.LinAlgError, match="not positive definite"):
        cholesky_factor(-torch.eye(3, dtype=DT))

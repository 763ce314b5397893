"""Spectral sets: exact top-k against a full SVD, power iteration against exact (spec sfw.md §2.3, §7)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from slimtrain.fw import NuclearNormBall, SpectralKSparsePolytope, SpectralKSupportNormBall, top_k_singular

D = torch.float64
shapes = st.tuples(st.integers(1, 7), st.integers(1, 7), st.integers(0, 2**31 - 1))


def _nearly_tied(rows, cols, seed, gap=1e-3):
    """A matrix whose top singular values differ by a relative gap (hard for the power method)."""
    gen = torch.Generator().manual_seed(seed)
    u = torch.linalg.qr(torch.randn(rows, rows, generator=gen, dtype=D)).Q
    v = torch.linalg.qr(torch.randn(cols, cols, generator=gen, dtype=D)).Q
    r = min(rows, cols)
    s = torch.linspace(1.0, 1.0 - gap * (r - 1), r, dtype=D)
    return (u[:, :r] * s) @ v[:, :r].T, s


@settings(max_examples=25)
@given(shape=shapes)
def test_exact_top_k_matches_full_svd(shape):
    """The exact solver's singular values equal torch.linalg.svd's; U·diag(S)·Vh is the best rank-k part."""
    rows, cols, seed = shape
    g = torch.randn(1, rows, cols, generator=torch.Generator().manual_seed(seed), dtype=D)
    for k in range(1, min(rows, cols) + 1):
        u, s, vh = top_k_singular(g, k)
        uf, sf, vhf = torch.linalg.svd(g[0], full_matrices=False)
        torch.testing.assert_close(s[0], sf[:k], rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(
            u[0] @ (s[0, :, None] * vh[0]), (uf[:, :k] * sf[:k]) @ vhf[:k], atol=1e-9, rtol=0
        )


@settings(max_examples=15)
@given(shape=shapes)
def test_power_iteration_never_beats_the_exact_lmo(shape):
    """⟨G, v_exact⟩ ≤ ⟨G, v_power⟩: the exact LMO is optimal, the randomized one can only fall short."""
    rows, cols, seed = shape
    g = torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed), dtype=D)
    for cls in (SpectralKSupportNormBall, SpectralKSparsePolytope):
        for k in range(1, min(rows, cols) + 1):
            exact = cls(rows, cols, k, 1.0).lmo(g)
            power = cls(rows, cols, k, 1.0, solver="power", power_iters=2).lmo(g)
            assert (g * exact).sum() <= (g * power).sum() + 1e-10
    nuc_exact = (g * NuclearNormBall(rows, cols, 1.0).lmo(g)).sum()
    nuc_power = (g * NuclearNormBall(rows, cols, 1.0, solver="power", power_iters=2).lmo(g)).sum()
    assert nuc_exact <= nuc_power + 1e-10


def test_exact_lmo_is_exact_on_nearly_tied_singular_values():
    """With top singular values 0.1% apart the exact LMO reaches −r‖σ_{1:k}‖₂; power rounds do no better."""
    g, s = _nearly_tied(24, 40, seed=1)
    k = 4
    exact = SpectralKSupportNormBall(24, 40, k, 1.0).lmo(g)
    assert (g * exact).sum().item() == pytest.approx(-s[:k].norm().item(), rel=1e-12)
    power = SpectralKSupportNormBall(24, 40, k, 1.0, solver="power", power_iters=1).lmo(g)
    assert (g * power).sum().item() >= (g * exact).sum().item()


@settings(max_examples=20)
@given(shape=shapes, radius=st.floats(0.1, 5.0))
def test_lmo_rank_and_norm(shape, radius):
    """Spectral k-support: rank(v) ≤ k, ‖v‖_F = r; spectral K-sparse: σ(v) = r on k directions (any shape)."""
    rows, cols, seed = shape
    g = torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed), dtype=D)
    for k in range(1, min(rows, cols) + 1):
        v = SpectralKSupportNormBall(rows, cols, k, radius).lmo(g)
        assert torch.linalg.matrix_rank(v, rtol=1e-9) <= k
        assert v.norm().item() == pytest.approx(radius, rel=1e-10)
        w = SpectralKSparsePolytope(rows, cols, k, radius).lmo(g)
        torch.testing.assert_close(torch.linalg.svdvals(w)[:k], torch.full((k,), radius, dtype=D))


def test_lmo_runs_on_float32_batches():
    """Float32 gradients give float32 LMO outputs of the input's shape, reaching the exact value to 1e-5."""
    g = torch.randn(3, 8, 12)
    ball = SpectralKSupportNormBall(8, 12, 3, 1.0)
    v = ball.lmo_batch(g, torch.ones(3))
    assert v.dtype == torch.float32 and v.shape == g.shape
    expected = -torch.linalg.svdvals(g.double())[:, :3].norm(dim=1)
    torch.testing.assert_close((g * v).sum((1, 2)).double(), expected, rtol=1e-5, atol=1e-5)


def test_power_solver_is_deterministic():
    """The power iteration's start is seeded: two calls give identical outputs (so DDP ranks agree)."""
    g = torch.randn(6, 9)
    ball = SpectralKSparsePolytope(6, 9, 2, 1.0, solver="power")
    assert torch.equal(ball.lmo(g), ball.lmo(g))

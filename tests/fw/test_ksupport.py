"""The k-support norm and the (group) k-support balls (spec sfw.md §2.3, §7.3)."""

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize

from slimtrain.fw import GroupKSupportNormBall, KSupportNormBall, k_support_norm

D = torch.float64
vectors = st.integers(1, 7).flatmap(
    lambda n: st.tuples(
        st.lists(st.floats(-10, 10, allow_nan=False), min_size=n, max_size=n), st.integers(1, n)
    )
)


def _norm(x, k):
    return k_support_norm(torch.tensor([x], dtype=D), k)[0].item()


def _brute_force_norm(w, k):
    """‖w‖² = min Σ w_i²/θ_i over 0 < θ_i ≤ 1, Σθ_i ≤ k (the box-norm form of the k-support norm)."""
    w2 = np.asarray(w) ** 2
    n = len(w2)
    if not w2.any():
        return 0.0
    res = minimize(
        lambda t: float(np.sum(w2 / t)),
        x0=np.full(n, min(1.0, k / n) * 0.999),
        jac=lambda t: -w2 / t**2,
        bounds=[(1e-9, 1.0)] * n,
        constraints=[{"type": "ineq", "fun": lambda t: k - t.sum(), "jac": lambda t: -np.ones(n)}],
        method="SLSQP",
        options={"ftol": 1e-14, "maxiter": 500},
    )
    return float(np.sqrt(res.fun))


@settings(max_examples=30)
@given(data=vectors)
def test_k1_is_l1_and_kn_is_l2(data):
    """At k = 1 the norm is ‖x‖₁ (the reference's ‖x‖₁/√(n+1) bug is not reproduced), at k = n ‖x‖₂."""
    x, _ = data
    t = torch.tensor(x, dtype=D)
    assert _norm(x, 1) == pytest.approx(t.abs().sum().item(), rel=1e-12, abs=1e-12)
    assert _norm(x, len(x)) == pytest.approx(t.norm().item(), rel=1e-12, abs=1e-12)


@settings(max_examples=25)
@given(data=vectors)
def test_closed_form_matches_the_variational_definition(data):
    """The closed form equals a numerical minimisation of the box-norm definition (tiny n)."""
    x, k = data
    assert _norm(x, k) == pytest.approx(_brute_force_norm(x, k), rel=1e-5, abs=1e-6)


@settings(max_examples=30)
@given(data=vectors, seed=st.integers(0, 2**31 - 1))
def test_hoelder_inequality_with_equality_at_top_k(data, seed):
    """|⟨g, θ⟩| ≤ ‖θ‖_k·‖top_k(g)‖₂ for random pairs, with equality at θ = top_k(g)."""
    x, k = data
    g = torch.tensor(x, dtype=D)
    theta = torch.randn(len(x), generator=torch.Generator().manual_seed(seed), dtype=D)
    dual = g.abs().sort(descending=True).values[:k].norm().item()
    assert abs(torch.dot(g, theta).item()) <= _norm(theta.tolist(), k) * dual + 1e-9
    idx = g.abs().topk(k).indices
    top = torch.zeros_like(g).scatter_(0, idx, g[idx])
    assert torch.dot(g, top).item() == pytest.approx(_norm(top.tolist(), k) * dual, rel=1e-10, abs=1e-12)


@settings(max_examples=30)
@given(data=vectors)
def test_norm_is_non_increasing_in_k(data):
    """‖x‖_k ≥ ‖x‖_{k+1} for every k."""
    x, _ = data
    values = [_norm(x, k) for k in range(1, len(x) + 1)]
    assert all(a >= b - 1e-12 for a, b in itertools.pairwise(values))


@settings(max_examples=20)
@given(data=vectors, radius=st.floats(0.1, 10))
def test_lmo_output_is_k_sparse_with_l2_norm_r(data, radius):
    """The k-support LMO output has at most k non-zeros, L2 norm r and k-support norm r."""
    x, k = data
    g = torch.tensor(x, dtype=D)
    if g.norm() < 1e-9:
        return
    v = KSupportNormBall(len(x), k, radius).lmo(g)
    assert torch.count_nonzero(v) <= k
    assert v.norm().item() == pytest.approx(radius, rel=1e-12)
    assert _norm(v.tolist(), k) == pytest.approx(radius, rel=1e-10)


def test_lmo_keeps_signed_values_of_the_top_k():
    """The k-support LMO is −r·top_k(g)/‖top_k(g)‖ (values, not signs)."""
    g = torch.tensor([0.1, -3.0, 2.0, 0.5], dtype=D)
    v = KSupportNormBall(4, 2, 1.0).lmo(g)
    expected = torch.tensor([0.0, 3.0, -2.0, 0.0], dtype=D) / 13**0.5
    torch.testing.assert_close(v, expected)


def test_group_lmo_selects_exactly_k_filters_even_on_ties():
    """Topk-style selection keeps exactly k filters when all norms tie; kthvalue (faithful) keeps more."""
    g = torch.ones(6, 2, 3, 3, dtype=D)
    ball = GroupKSupportNormBall.for_filters(g.shape, k=2, radius=1.0)
    v = ball.lmo(g.flatten()).view_as(g)
    assert (v.flatten(1).norm(dim=1) > 0).sum() == 2
    assert ball.is_feasible(v.flatten(), rtol=1e-12)
    faithful = GroupKSupportNormBall.for_filters(g.shape, k=2, radius=1.0, select="kthvalue")
    vf = faithful.lmo(g.flatten())
    assert (vf.view(6, -1).norm(dim=1) > 0).sum() == 6
    assert not faithful.is_feasible(vf, rtol=1e-9)


@settings(max_examples=20)
@given(seed=st.integers(0, 2**31 - 1), k=st.integers(1, 4))
def test_group_gauge_is_k_support_of_filter_norms(seed, k):
    """The group gauge equals the k-support norm of the vector of filter L2 norms (uneven group sizes)."""
    sizes = [1, 3, 2, 4]
    x = torch.randn(sum(sizes), generator=torch.Generator().manual_seed(seed), dtype=D)
    norms = torch.stack([c.norm() for c in x.split(sizes)])
    ball = GroupKSupportNormBall(sizes, k, 1.0)
    assert ball.gauge(x).item() == pytest.approx(_norm(norms.tolist(), k), rel=1e-12)


def test_with_k_keeps_the_diameter_and_k_n_is_the_l2_ball():
    """with_k(n) keeps D = 2r, and its LMO is the L2-ball LMO −r·g/‖g‖ (delayed k, spec §2.7)."""
    g = torch.randn(10, dtype=D)
    ball = KSupportNormBall(10, 3, 2.0)
    relaxed = ball.with_k(10)
    assert relaxed.diameter == ball.diameter and relaxed.radius == ball.radius
    torch.testing.assert_close(relaxed.lmo(g), -2.0 * g / g.norm())

"""Tests of the exact ReLU proximal map (spec nnbcd.md §2.3, §7.1)."""

import math

import torch
from hypothesis import given
from hypothesis import strategies as st

from slimtrain.bcd.relu_prox import relu_prox


def _f(u, v, c, g):
    return 0.5 * (v - u.clamp_min(0)) ** 2 + 0.5 * g * (u - c) ** 2


def _three_case(v, c, g):
    """Independent three-case form: compare the candidate on each side and the kink u = 0."""
    candidates = torch.stack([((v + g * c) / (1 + g)).clamp_min(0), c.clamp_max(0), torch.zeros_like(c)])
    values = _f(candidates, v, c, g)
    return candidates.gather(0, values.argmin(0, keepdim=True)).squeeze(0)


def _random_inputs(n, seed):
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(n, generator=gen, dtype=torch.float64) * 3
    c = torch.randn(n, generator=gen, dtype=torch.float64) * 3
    g = torch.rand(n, generator=gen, dtype=torch.float64) * 10 + 1e-3
    return v, c, g


def test_matches_three_case_rule_on_many_random_inputs():
    """For 10⁵ random (v, c, g) the prox value equals an independent three-candidate rule's to 1e-12."""
    v, c, g = _random_inputs(100_000, 2)
    gap = _f(relu_prox(v, c, g), v, c, g) - _f(_three_case(v, c, g), v, c, g)
    assert gap.abs().max() < 1e-12


def test_matches_fine_grid_on_random_inputs():
    """For 2·10⁴ random (v, c, g) the closed form is never worse than a fine grid (by 1e-9) and is near it.

    The grid minimum is an upper bound of the true minimum, so f(prox) ≤ grid + 1e-9 must hold exactly; the
    reverse gap is bounded by the grid resolution (a near-tie may send the fine grid to the other branch).
    """
    n = 20_000
    v, c, g = _random_inputs(n, 1)
    u = relu_prox(v, c, g)
    best = torch.full_like(v, math.inf)
    # Coarse grid, then a fine grid around each coarse argmin: the brute-force minimum over [-15, 15].
    coarse = torch.linspace(-15, 15, 601, dtype=torch.float64)
    for chunk in range(0, n, 2000):
        sl = slice(chunk, chunk + 2000)
        vals = _f(coarse[None, :], v[sl, None], c[sl, None], g[sl, None])
        centre = coarse[vals.argmin(1)]
        fine = centre[:, None] + torch.linspace(-0.05, 0.05, 1001, dtype=torch.float64)[None, :]
        best[sl] = _f(fine, v[sl, None], c[sl, None], g[sl, None]).min(1).values
    gap = _f(u, v, c, g) - best
    assert gap.max() < 1e-9
    assert gap.min() > -1e-2


@given(
    v=st.floats(-20, 20),
    c=st.floats(-20, 20),
    g=st.floats(1e-3, 1e3),
)
def test_matches_three_case_implementation(v, c, g):
    """The two-branch rule attains the same objective value as an independent three-candidate rule."""
    tv, tc = torch.tensor([v], dtype=torch.float64), torch.tensor([c], dtype=torch.float64)
    u = relu_prox(tv, tc, g)
    ref = _three_case(tv, tc, g)
    assert torch.allclose(_f(u, tv, tc, g), _f(ref, tv, tc, g), rtol=1e-12, atol=1e-12)


def test_rejects_non_positive_weight():
    """A non-positive quadratic weight g is rejected, since the problem is then unbounded or not strict."""
    try:
        relu_prox(torch.zeros(1), torch.zeros(1), 0.0)
    except ValueError as err:
        assert "g > 0" in str(err)
    else:
        raise AssertionError("g = 0 was accepted")

"""Properties of every constraint set (spec sfw.md §7.1, §7.2): LMO optimality and value, feasibility."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from slimtrain.fw import (
    ConstraintSet,
    GroupKSupportNormBall,
    KSparsePolytope,
    KSupportNormBall,
    LpBall,
    NuclearNormBall,
    SpectralKSparsePolytope,
    SpectralKSupportNormBall,
    constraint_from_config,
)

D = torch.float64


def _top_abs(g, k):
    return g.abs().flatten().sort(descending=True).values[:k]


def _rand_orth(gen, n, k):
    return torch.linalg.qr(torch.randn(n, k, generator=gen, dtype=D)).Q


# Each case: (factory(gen) -> set, dual norm of g, random vertex (feasible point on the boundary)).
def _lp(p):
    def make(gen):
        n = int(torch.randint(1, 9, (1,), generator=gen))
        return LpBall(n, radius=0.5 + float(torch.rand(1, generator=gen, dtype=D)), p=p)

    def dual(c, g):
        q = 1.0 if math.isinf(p) else (math.inf if p == 1 else p / (p - 1))
        return torch.linalg.vector_norm(g, ord=q)

    def vertex(c, gen):
        n = c.shape[0]
        if p == 1:
            x = torch.zeros(n, dtype=D)
            x[int(torch.randint(n, (1,), generator=gen))] = 1.0
            return c.radius * x * (1 if torch.rand(1, generator=gen) < 0.5 else -1)
        if math.isinf(p):
            return c.radius * torch.randint(0, 2, (n,), generator=gen).to(D).mul(2).sub(1)
        x = torch.randn(n, generator=gen, dtype=D)
        return c.radius * x / torch.linalg.vector_norm(x, ord=p)

    return make, dual, vertex


def _ksparse():
    def make(gen):
        n = int(torch.randint(1, 9, (1,), generator=gen))
        return KSparsePolytope(n, int(torch.randint(1, n + 1, (1,), generator=gen)), radius=1.3)

    def vertex(c, gen):
        x = torch.zeros(c.shape[0], dtype=D)
        idx = torch.randperm(c.shape[0], generator=gen)[: c.k]
        x[idx] = torch.randint(0, 2, (c.k,), generator=gen).to(D).mul(2).sub(1) * c.radius
        return x

    return make, lambda c, g: _top_abs(g, c.k).sum(), vertex


def _ksupport():
    def make(gen):
        n = int(torch.randint(1, 9, (1,), generator=gen))
        return KSupportNormBall(n, int(torch.randint(1, n + 1, (1,), generator=gen)), radius=0.7)

    def vertex(c, gen):
        x = torch.zeros(c.shape[0], dtype=D)
        idx = torch.randperm(c.shape[0], generator=gen)[: c.k]
        x[idx] = torch.randn(c.k, generator=gen, dtype=D)
        return c.radius * x / x.norm()

    return make, lambda c, g: _top_abs(g, c.k).norm(), vertex


def _group():
    def make(gen):
        sizes = torch.randint(1, 4, (int(torch.randint(1, 6, (1,), generator=gen)),), generator=gen).tolist()
        return GroupKSupportNormBall(sizes, int(torch.randint(1, len(sizes) + 1, (1,), generator=gen)), 1.1)

    def norms(c, g):
        return torch.stack([chunk.norm() for chunk in g.split(c.group_sizes)])

    def vertex(c, gen):
        x = torch.randn(c.shape[0], generator=gen, dtype=D)
        keep = torch.zeros(len(c.group_sizes), dtype=D)
        keep[torch.randperm(len(c.group_sizes), generator=gen)[: c.k]] = 1
        x = x * torch.repeat_interleave(keep, torch.tensor(c.group_sizes))
        return c.radius * x / x.norm()

    return make, lambda c, g: norms(c, g).sort(descending=True).values[: c.k].norm(), vertex


def _spectral(cls, dual_fn, vertex_fn):
    def make(gen):
        rows, cols = (int(x) for x in torch.randint(1, 6, (2,), generator=gen))
        if cls is NuclearNormBall:
            return cls(rows, cols, radius=0.9)
        return cls(rows, cols, int(torch.randint(1, min(rows, cols) + 1, (1,), generator=gen)), radius=0.9)

    def dual(c, g):
        return dual_fn(c, torch.linalg.svdvals(g.view(c.shape)))

    def vertex(c, gen):
        k = getattr(c, "k", 1)
        u, v = _rand_orth(gen, c.shape[0], k), _rand_orth(gen, c.shape[1], k)
        return vertex_fn(c, u, v, torch.rand(k, generator=gen, dtype=D) + 0.1).flatten()

    return make, dual, vertex


CASES = {
    "l1": _lp(1.0),
    "l2": _lp(2.0),
    "l3": _lp(3.0),
    "l1.5": _lp(1.5),
    "linf": _lp(math.inf),
    "k_sparse": _ksparse(),
    "k_support": _ksupport(),
    "group_k_support": _group(),
    "spectral_k_support": _spectral(
        SpectralKSupportNormBall,
        lambda c, s: s[: c.k].norm(),
        lambda c, u, v, s: c.radius * (u * s) @ v.T / s.norm(),
    ),
    "spectral_k_sparse": _spectral(
        SpectralKSparsePolytope, lambda c, s: s[: c.k].sum(), lambda c, u, v, s: c.radius * u @ v.T
    ),
    "nuclear": _spectral(NuclearNormBall, lambda c, s: s[0], lambda c, u, v, s: c.radius * u @ v.T),
}
seeds = st.integers(0, 2**31 - 1)


def _draw(case, seed):
    gen = torch.Generator().manual_seed(seed)
    make, dual, vertex = CASES[case]
    c = make(gen)
    g = torch.randn(c.numel, generator=gen, dtype=D)
    return gen, c, g, dual, vertex


@pytest.mark.parametrize("case", CASES)
@settings(max_examples=10)
@given(seed=seeds)
def test_lmo_value_is_minus_radius_times_dual_norm(case, seed):
    """⟨g, LMO(g)⟩ = −r·‖g‖_dual exactly (spec §7.1)."""
    _, c, g, dual, _ = _draw(case, seed)
    v = c.lmo(g)
    assert torch.dot(g, v).item() == pytest.approx(-c.radius * dual(c, g).item(), rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("case", CASES)
@settings(max_examples=10)
@given(seed=seeds)
def test_lmo_output_is_feasible(case, seed):
    """The LMO output lies in the set: ‖v‖_C ≤ r(1 + 1e-9) (spec §7.2)."""
    _, c, g, _, _ = _draw(case, seed)
    v = c.lmo(g)
    assert c.gauge(v).item() <= c.radius * (1 + 1e-9)
    assert c.is_feasible(v)


@pytest.mark.parametrize("case", CASES)
@settings(max_examples=8)
@given(seed=seeds)
def test_no_vertex_or_convex_combination_beats_the_lmo(case, seed):
    """⟨g, v⟩ ≤ ⟨g, u⟩ + 1e-9 for random feasible u: vertices and convex combinations of them (spec §7.1)."""
    gen, c, g, _, vertex = _draw(case, seed)
    best = torch.dot(g, c.lmo(g)).item()
    points = torch.stack([vertex(c, gen) for _ in range(12)])
    weights = torch.rand(6, 12, generator=gen, dtype=D)
    combos = (weights / weights.sum(1, keepdim=True)) @ points
    for u in torch.cat([points, combos]):
        assert c.gauge(u).item() <= c.radius * (1 + 1e-9), "the test's sampler left the set"
        assert best <= torch.dot(g, u).item() + 1e-9


@pytest.mark.parametrize("case", CASES)
@settings(max_examples=5)
@given(seed=seeds)
def test_batched_lmo_matches_one_at_a_time(case, seed):
    """lmo_batch with different radii per row equals the single-tensor LMO of each row's set."""
    gen, c, _, _, _ = _draw(case, seed)
    g = torch.randn(3, *c.shape, generator=gen, dtype=D)
    radii = torch.tensor([0.5, 1.0, 2.5], dtype=D)
    batch = c.lmo_batch(g, radii)
    for i in range(3):
        torch.testing.assert_close(batch[i], c.with_radius(float(radii[i])).lmo(g[i]), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("case", CASES)
def test_zero_gradient_gives_zero_vertex(case):
    """A gradient with norm below 1e-10 gives v = 0 (spec §2.2 step 3)."""
    _, c, _, _, _ = _draw(case, 3)
    assert torch.count_nonzero(c.lmo(torch.full((c.numel,), 1e-13, dtype=D))) == 0


@pytest.mark.parametrize("case", CASES)
@settings(max_examples=5)
@given(seed=seeds, scale=st.floats(0.01, 100.0))
def test_shift_inside_is_radial_and_feasible(case, seed, scale):
    """shift_inside returns a feasible positive multiple of x, and leaves feasible points unchanged (§2.6)."""
    gen, c, _, _, _ = _draw(case, seed)
    x = scale * torch.randn(c.numel, generator=gen, dtype=D)
    y = c.shift_inside(x)
    assert c.gauge(y).item() <= c.radius * (1 + 1e-9)
    factor = (torch.dot(x, y) / torch.dot(x, x)).item()
    assert 0 < factor <= 1 + 1e-12
    torch.testing.assert_close(y, factor * x)
    if c.gauge(x) <= c.radius:
        assert torch.equal(y, x)


@pytest.mark.parametrize("case", CASES)
def test_config_round_trip_rebuilds_an_equal_set(case):
    """to_config → constraint_from_config rebuilds an equal set with equal LMO."""
    _, c, g, _, _ = _draw(case, 11)
    twin = constraint_from_config(c.to_config())
    assert isinstance(twin, ConstraintSet) and twin == c and twin.diameter == c.diameter
    assert torch.equal(twin.lmo(g), c.lmo(g))


@pytest.mark.parametrize("case", CASES)
def test_diameter_bounds_the_distance_between_vertices(case):
    """No two sampled feasible points are farther apart (L2) than the stated diameter D."""
    gen, c, _, _, vertex = _draw(case, 5)
    points = torch.stack([vertex(c, gen) for _ in range(30)])
    assert torch.cdist(points, points).max().item() <= c.diameter * (1 + 1e-9)


def test_bad_inputs_name_the_set():
    """Wrong sizes, radii and k raise errors that name the set."""
    with pytest.raises(ValueError, match="KSupportNormBall"):
        KSupportNormBall(5, 2, 1.0).lmo(torch.zeros(6))
    with pytest.raises(ValueError, match="radius"):
        LpBall(3, 0.0)
    with pytest.raises(ValueError, match="KSparsePolytope"):
        KSparsePolytope(3, 4, 1.0)
    with pytest.raises(ValueError, match="unknown constraint type"):
        constraint_from_config({"type": "nope"})

"""Properties of every registered constraint set: LMO optimality and value, feasibility, config round trip.

Parametrized over the names of ``CONSTRAINT_SETS``; each name needs at least one small-shape case in ``CASES``
(a registered set without one fails), and every case builds the set it is filed under.
"""

import itertools
import json
import math
from typing import NamedTuple

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
from slimtrain.fw.base import CONSTRAINT_SETS

D = torch.float64


class Case(NamedTuple):
    """A small-shape factory for one registered set, with what the tests need to know about it."""

    set_name: str  # the registry name of the set ``make`` builds
    make: object  # make(gen) -> a random small set
    dual: object  # dual(c, g) -> the dual norm of g
    vertex: object  # vertex(c, gen) -> a random feasible point on the boundary
    vertices: object = None  # vertices(c) -> every vertex (polytopes with few vertices), else None


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

    def vertices(c):
        n = c.shape[0]
        if p == 1:
            eye = torch.eye(n, dtype=D)
            return c.radius * torch.cat([eye, -eye])
        return c.radius * torch.tensor(list(itertools.product((-1.0, 1.0), repeat=n)), dtype=D)

    return Case("lp_ball", make, dual, vertex, vertices if p == 1 or math.isinf(p) else None)


def _ksparse():
    def make(gen):
        n = int(torch.randint(1, 9, (1,), generator=gen))
        return KSparsePolytope(n, int(torch.randint(1, n + 1, (1,), generator=gen)), radius=1.3)

    def vertex(c, gen):
        x = torch.zeros(c.shape[0], dtype=D)
        idx = torch.randperm(c.shape[0], generator=gen)[: c.k]
        x[idx] = torch.randint(0, 2, (c.k,), generator=gen).to(D).mul(2).sub(1) * c.radius
        return x

    def vertices(c):
        out = []
        for support in itertools.combinations(range(c.shape[0]), c.k):
            for signs in itertools.product((-1.0, 1.0), repeat=c.k):
                x = torch.zeros(c.shape[0], dtype=D)
                x[list(support)] = torch.tensor(signs, dtype=D) * c.radius
                out.append(x)
        return torch.stack(out)

    return Case("k_sparse", make, lambda c, g: _top_abs(g, c.k).sum(), vertex, vertices)


def _ksupport():
    def make(gen):
        n = int(torch.randint(1, 9, (1,), generator=gen))
        return KSupportNormBall(n, int(torch.randint(1, n + 1, (1,), generator=gen)), radius=0.7)

    def vertex(c, gen):
        x = torch.zeros(c.shape[0], dtype=D)
        idx = torch.randperm(c.shape[0], generator=gen)[: c.k]
        x[idx] = torch.randn(c.k, generator=gen, dtype=D)
        return c.radius * x / x.norm()

    return Case("k_support", make, lambda c, g: _top_abs(g, c.k).norm(), vertex)


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

    return Case(
        "group_k_support", make, lambda c, g: norms(c, g).sort(descending=True).values[: c.k].norm(), vertex
    )


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

    return Case(cls.name, make, dual, vertex)


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


def _params(only_enumerable=False):
    """(registry name, case) for every case of every registered set; (name, None) for a set without any."""
    params = []
    for name in CONSTRAINT_SETS.names():
        cases = [
            case
            for case, spec in CASES.items()
            if spec.set_name == name and (spec.vertices is not None or not only_enumerable)
        ]
        params += [pytest.param(name, case, id=name if case == name else f"{name}-{case}") for case in cases]
        if not cases and not only_enumerable:
            params.append(pytest.param(name, None, id=f"{name}-no-case"))
    return params


SETS = _params()


def _draw(name, case, seed):
    if case is None:
        pytest.fail(
            f"constraint set {name!r} is registered but has no small-shape case in CASES ({__name__})"
        )
    gen = torch.Generator().manual_seed(seed)
    spec = CASES[case]
    c = spec.make(gen)
    assert type(c) is CONSTRAINT_SETS.get(name) and c.name == name, f"case {case!r} does not build {name!r}"
    g = torch.randn(c.numel, generator=gen, dtype=D)
    return gen, c, g, spec.dual, spec.vertex


def test_every_case_is_filed_under_a_registered_set():
    """No case names a set that is not registered (a renamed or removed set)."""
    assert {spec.set_name for spec in CASES.values()} <= set(CONSTRAINT_SETS.names())


@pytest.mark.parametrize(("name", "case"), SETS)
@settings(max_examples=10)
@given(seed=seeds)
def test_lmo_value_is_minus_radius_times_dual_norm(name, case, seed):
    """⟨g, LMO(g)⟩ = −r·‖g‖_dual exactly (spec §7.1)."""
    _, c, g, dual, _ = _draw(name, case, seed)
    v = c.lmo(g)
    assert torch.dot(g, v).item() == pytest.approx(-c.radius * dual(c, g).item(), rel=1e-10, abs=1e-12)


@pytest.mark.parametrize(("name", "case"), SETS)
@settings(max_examples=10)
@given(seed=seeds)
def test_lmo_output_is_feasible(name, case, seed):
    """The LMO output lies in the set: ‖v‖_C ≤ r(1 + 1e-9) (spec §7.2)."""
    _, c, g, _, _ = _draw(name, case, seed)
    v = c.lmo(g)
    assert c.gauge(v).item() <= c.radius * (1 + 1e-9)
    assert c.is_feasible(v)


@pytest.mark.parametrize(("name", "case"), SETS)
@settings(max_examples=8)
@given(seed=seeds)
def test_no_vertex_or_convex_combination_beats_the_lmo(name, case, seed):
    """⟨g, v⟩ ≤ ⟨g, u⟩ + 1e-9 for random feasible u: vertices and convex combinations of them (spec §7.1)."""
    gen, c, g, _, vertex = _draw(name, case, seed)
    best = torch.dot(g, c.lmo(g)).item()
    points = torch.stack([vertex(c, gen) for _ in range(12)])
    weights = torch.rand(6, 12, generator=gen, dtype=D)
    combos = (weights / weights.sum(1, keepdim=True)) @ points
    # Random points of every scale, radially shifted into the set (most land on its boundary).
    scales = c.radius * 10 ** (4 * torch.rand(40, 1, generator=gen, dtype=D) - 2)
    shifted = torch.stack(
        [c.shift_inside(x) for x in scales * torch.randn(40, c.numel, generator=gen, dtype=D)]
    )
    for u in torch.cat([points, combos, shifted]):
        assert c.gauge(u).item() <= c.radius * (1 + 1e-9), "the test's sampler left the set"
        assert best <= torch.dot(g, u).item() + 1e-9


@pytest.mark.parametrize(("name", "case"), _params(only_enumerable=True))
@settings(max_examples=8)
@given(seed=seeds)
def test_lmo_attains_the_minimum_over_every_vertex(name, case, seed):
    """For polytopes with few vertices, ⟨g, LMO(g)⟩ equals the minimum of ⟨g, v⟩ over all of them."""
    _, c, g, _, _ = _draw(name, case, seed)
    corners = CASES[case].vertices(c)
    assert (c.gauge_batch(corners) <= c.radius * (1 + 1e-9)).all()
    best = (corners @ g).min().item()
    assert torch.dot(g, c.lmo(g)).item() == pytest.approx(best, rel=1e-10, abs=1e-12)


@pytest.mark.parametrize(("name", "case"), SETS)
@settings(max_examples=5)
@given(seed=seeds)
def test_batched_lmo_matches_one_at_a_time(name, case, seed):
    """lmo_batch with different radii per row equals the single-tensor LMO of each row's set."""
    gen, c, _, _, _ = _draw(name, case, seed)
    g = torch.randn(3, *c.shape, generator=gen, dtype=D)
    radii = torch.tensor([0.5, 1.0, 2.5], dtype=D)
    batch = c.lmo_batch(g, radii)
    for i in range(3):
        torch.testing.assert_close(batch[i], c.with_radius(float(radii[i])).lmo(g[i]), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(("name", "case"), SETS)
def test_zero_gradient_gives_zero_vertex(name, case):
    """A gradient with norm below 1e-10 gives v = 0 (spec §2.2 step 3)."""
    _, c, _, _, _ = _draw(name, case, 3)
    assert torch.count_nonzero(c.lmo(torch.full((c.numel,), 1e-13, dtype=D))) == 0


@pytest.mark.parametrize(("name", "case"), SETS)
@settings(max_examples=5)
@given(seed=seeds, scale=st.floats(0.01, 100.0))
def test_shift_inside_is_radial_and_feasible(name, case, seed, scale):
    """shift_inside returns a feasible positive multiple of x, and leaves feasible points unchanged (§2.6)."""
    gen, c, _, _, _ = _draw(name, case, seed)
    x = scale * torch.randn(c.numel, generator=gen, dtype=D)
    y = c.shift_inside(x)
    assert c.gauge(y).item() <= c.radius * (1 + 1e-9)
    factor = (torch.dot(x, y) / torch.dot(x, x)).item()
    assert 0 < factor <= 1 + 1e-12
    torch.testing.assert_close(y, factor * x)
    if c.gauge(x) <= c.radius:
        assert torch.equal(y, x)


@pytest.mark.parametrize(("name", "case"), SETS)
def test_config_round_trip_rebuilds_an_equal_set(name, case):
    """to_config → JSON → constraint_from_config rebuilds an equal set with equal LMO, gauge and diameter."""
    gen, c, g, _, _ = _draw(name, case, 11)
    config = c.to_config()
    assert config["type"] == name
    twin = constraint_from_config(json.loads(json.dumps(config)))
    assert isinstance(twin, ConstraintSet) and type(twin) is type(c) and twin == c
    assert twin.diameter == c.diameter and twin.to_config() == config
    assert torch.equal(twin.lmo(g), c.lmo(g))
    x = torch.randn(c.numel, generator=gen, dtype=D)
    assert torch.equal(twin.gauge(x), c.gauge(x)) and torch.equal(twin.shift_inside(x), c.shift_inside(x))


@pytest.mark.parametrize(("name", "case"), SETS)
def test_diameter_bounds_the_distance_between_vertices(name, case):
    """No two sampled feasible points are farther apart (L2) than the stated diameter D."""
    gen, c, _, _, vertex = _draw(name, case, 5)
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
    with pytest.raises(ValueError, match="unknown constraint set 'nope'; registered: group_k_support"):
        constraint_from_config({"type": "nope"})

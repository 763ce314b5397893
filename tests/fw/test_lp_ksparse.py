"""Lp balls and the K-sparse polytope: closed forms of their LMOs, gauges and diameters (spec sfw.md §2.3)."""

import math

import pytest
import torch

from slimtrain.fw import KSparsePolytope, LpBall

D = torch.float64


def test_k_sparse_lmo_keeps_signs_only():
    """The K-sparse LMO puts −r·sign(g_i) on the k largest |g_i| (not the values)."""
    g = torch.tensor([0.1, -3.0, 2.0, 0.5], dtype=D)
    v = KSparsePolytope(4, 2, 1.5).lmo(g)
    torch.testing.assert_close(v, torch.tensor([0.0, 1.5, -1.5, 0.0], dtype=D))


def test_k_sparse_gauge_and_diameter():
    """Gauge max(‖x‖∞, ‖x‖₁/k); D = 2r√k."""
    c = KSparsePolytope(5, 2, 1.0)
    x = torch.tensor([0.5, 0.5, 0.5, 0.5, 0.0], dtype=D)
    assert c.gauge(x).item() == pytest.approx(1.0)
    assert c.diameter == pytest.approx(2 * math.sqrt(2))


def test_k_sparse_with_k_keeps_the_diameter():
    """with_k keeps D and recomputes r = D/(2√k) (delayed k, spec §2.7)."""
    c = KSparsePolytope(16, 4, 1.0)
    relaxed = c.with_k(16)
    assert relaxed.diameter == pytest.approx(c.diameter)
    assert relaxed.radius == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("p", "n", "factor"),
    [(1.0, 9, 2.0), (2.0, 9, 2.0), (1.5, 9, 2.0), (4.0, 16, 2 * 16 ** (0.25)), (math.inf, 9, 6.0)],
)
def test_lp_diameter_is_corrected(p, n, factor):
    """D = 2r·max(1, n^{1/2−1/p}); the reference's conversion is wrong for 1 < p < 2 (spec §5)."""
    assert LpBall(n, 1.0, p=p).diameter == pytest.approx(factor)


def test_lp_lmos_have_the_closed_forms():
    """L2: −r·g/‖g‖; L1: −r·sign(g_i)e_i at argmax |g_i|; L∞: −r·sign(g)."""
    g = torch.tensor([1.0, -4.0, 2.0], dtype=D)
    torch.testing.assert_close(LpBall(3, 2.0).lmo(g), -2.0 * g / g.norm())
    torch.testing.assert_close(LpBall(3, 2.0, p=1).lmo(g), torch.tensor([0.0, 2.0, 0.0], dtype=D))
    torch.testing.assert_close(LpBall(3, 2.0, p=math.inf).lmo(g), torch.tensor([-2.0, 2.0, -2.0], dtype=D))


def test_general_lp_lmo_does_not_overflow():
    """The general-p LMO stays finite for huge gradients (scaled before the power)."""
    g = torch.tensor([1e30, -2e30, 3e29])
    v = LpBall(3, 1.0, p=1.2).lmo(g)
    assert torch.isfinite(v).all()
    assert torch.linalg.vector_norm(v, ord=1.2).item() == pytest.approx(1.0, rel=1e-5)

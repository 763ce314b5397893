"""Stability bound of heavy-ball SGD on the SWD quadratic."""

from hypothesis import given
from hypothesis import strategies as st

from slimtrain.swd import is_stable, stability_limit


def test_limit_is_two_one_plus_beta() -> None:
    """The bound is 2(1 + β): 2 without momentum, 3.8 at β = 0.9."""
    assert stability_limit(0.0) == 2.0
    assert abs(stability_limit(0.9) - 3.8) < 1e-12


@given(st.floats(1e-4, 1.0), st.floats(1e-6, 1e3), st.floats(0.0, 0.99))
def test_stable_exactly_below_the_bound(lr: float, curvature: float, momentum: float) -> None:
    """is_stable holds iff η·h < 2(1 + β)."""
    assert is_stable(lr, curvature, momentum) == (lr * curvature < 2 * (1 + momentum))

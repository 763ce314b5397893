"""Gradual (Zhu & Gupta) and iterative (Han) sparsity schedules."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from slimtrain.pruning import cubic_sparsity, iterative_targets


def test_cubic_schedule_endpoints_and_midpoint() -> None:
    """s(t_0) = s_i, s(end) = s_f, s(midpoint) = s_f + (s_i − s_f)/8."""
    assert cubic_sparsity(10, 0.9, 10, 110) == 0.0
    assert cubic_sparsity(60, 0.9, 10, 110) == pytest.approx(0.9 - 0.9 / 8)
    assert cubic_sparsity(110, 0.9, 10, 110) == 0.9
    assert cubic_sparsity(500, 0.9, 10, 110) == 0.9
    assert cubic_sparsity(0, 0.9, 10, 110, initial_sparsity=0.1) == 0.1


@given(st.lists(st.integers(0, 200), min_size=2, max_size=10), st.integers(1, 7))
def test_cubic_schedule_is_non_decreasing_and_piecewise_constant(steps: list[int], frequency: int) -> None:
    """Sparsity never decreases with t and changes only at update steps t_0 + j·Δt."""
    values = [cubic_sparsity(t, 0.95, 20, 150, frequency=frequency) for t in sorted(steps)]
    assert values == sorted(values)
    for t in steps:
        last_update = 20 + ((t - 20) // frequency) * frequency if 20 <= t < 150 else t
        assert cubic_sparsity(t, 0.95, 20, 150, frequency=frequency) == cubic_sparsity(
            last_update, 0.95, 20, 150, frequency=frequency
        )


@given(st.integers(0, 999), st.integers(1, 10))
def test_iterative_targets_are_cumulative(target: int, iterations: int) -> None:
    """t_i = ⌊(i+1)·target/k⌋: non-decreasing, k of them, ending at the target."""
    targets = iterative_targets(target, iterations)
    assert len(targets) == iterations and targets[-1] == target and targets == sorted(targets)

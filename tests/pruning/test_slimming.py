"""Network-slimming smooth-L1 penalty on BatchNorm scales."""

import torch
from hypothesis import given
from hypothesis import strategies as st

from slimtrain.pruning import slimming_penalty, smooth_l1_gamma


@given(st.lists(st.floats(-5, 5), min_size=1, max_size=20))
def test_corrected_penalty_is_even(values: list[float]) -> None:
    """h(−x) = h(x) in the corrected mode."""
    x = torch.tensor(values, dtype=torch.float64)
    assert torch.equal(smooth_l1_gamma(x), smooth_l1_gamma(-x))


def test_reference_sign_bug_rewards_large_negative_scales() -> None:
    """With liu_sign_bug, h(−3) = −3 < h(3) = 3; the corrected h(−3) = 3."""
    x = torch.tensor([-3.0, 3.0])
    assert smooth_l1_gamma(x, sign_bug=True).tolist() == [-3.0, 3.0]
    assert smooth_l1_gamma(x).tolist() == [3.0, 3.0]


def test_penalty_gradient_is_two_gamma_inside_and_sign_outside() -> None:
    """d/dγ of c·Σh(γ) is c·2γ for |γ| ≤ 1 and c·sign(γ) for |γ| > 1."""
    gamma = torch.tensor([-2.0, -0.5, 0.25, 1.5], dtype=torch.float64, requires_grad=True)
    slimming_penalty([gamma], 0.1).backward()
    expected = 0.1 * torch.tensor([-1.0, -1.0, 0.5, 1.0], dtype=torch.float64)
    torch.testing.assert_close(gamma.grad, expected)

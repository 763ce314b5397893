"""Factorized layers: forward equivalence, reconstruction, conversion, counts (spec §7.5, §7.10)."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from slimtrain.layers import MatrixFactorizedConv2d, MatrixFactorizedLinear, TuckerFactorizedConv2d

F64 = torch.float64


def _ortho_error(u: torch.Tensor) -> float:
    u = u.detach()
    return float((u.T @ u - torch.eye(u.shape[1], dtype=u.dtype)).abs().max())


conv_settings = st.fixed_dictionaries(
    {
        "c_in": st.integers(1, 5),
        "c_out": st.integers(1, 5),
        "k": st.sampled_from([1, 2, 3, (3, 2)]),
        "stride": st.sampled_from([1, 2, (2, 1)]),
        "padding": st.sampled_from([0, 1, 2, (1, 0)]),
        "dilation": st.sampled_from([1, 2]),
        "bias": st.booleans(),
        "size": st.integers(5, 8),
    }
)


@settings(max_examples=25)
@given(conv_settings, st.sampled_from([TuckerFactorizedConv2d, MatrixFactorizedConv2d]))
def test_factorized_conv_forward_equals_conv2d_with_reconstructed_kernel(s, cls):
    """Forward equals F.conv2d with dense_weight(), bias once, any stride/padding/dilation (float32)."""
    layer = cls(
        s["c_in"],
        s["c_out"],
        s["k"],
        s["stride"],
        s["padding"],
        s["dilation"],
        bias=s["bias"],
        max_rank_fraction=1.0,
        min_rank=1,
    )
    if s["bias"]:
        nn.init.uniform_(layer.bias, 1.0, 2.0)
    x = torch.randn(2, s["c_in"], s["size"], s["size"])
    expected = F.conv2d(x, layer.dense_weight(), layer.bias, layer.stride, layer.padding, layer.dilation)
    assert torch.allclose(layer(x), expected, atol=1e-5)
    assert torch.allclose(layer.to_dense()(x), expected, atol=1e-5)


@given(
    c_in=st.integers(2, 6),
    c_out=st.integers(2, 6),
    r_out=st.integers(1, 3),
    r_in=st.integers(1, 3),
    adaptive=st.sampled_from([(0, 1), (0, 1, 2, 3)]),
)
def test_tucker_factors_orthonormal_and_ranks_as_requested(c_in, c_out, r_out, r_in, adaptive):
    """Fresh Tucker layers: orthonormal factors, requested adaptive ranks, full non-adaptive modes."""
    ranks = (min(r_out, c_out), min(r_in, c_in), 2, 2)
    layer = TuckerFactorizedConv2d(
        c_in, c_out, 3, ranks=ranks, adaptive_modes=adaptive, max_rank_fraction=1.0, dtype=F64
    )
    expected = ranks if adaptive == (0, 1, 2, 3) else (*ranks[:2], 3, 3)
    assert layer.ranks == expected
    assert all(_ortho_error(u) < 1e-12 for u in layer.factors)
    assert [u.requires_grad for u in layer.factors] == [m in adaptive for m in range(4)]


@pytest.mark.parametrize("bias", [True, False])
def test_from_trained_layers_exact_at_full_rank(bias):
    """A trained conv / linear converted at full rank computes the same outputs (float64, 1e-10)."""
    conv = nn.Conv2d(3, 4, 3, stride=2, padding=1, bias=bias, dtype=F64)
    x = torch.randn(2, 3, 7, 7, dtype=F64)
    for new in (
        TuckerFactorizedConv2d.from_conv(conv, max_rank_fraction=1.0),
        MatrixFactorizedConv2d.from_conv(conv, max_rank_fraction=1.0),
    ):
        assert (new(x) - conv(x)).abs().max() < 1e-10
        assert new.dense_parameter_count() == sum(p.numel() for p in conv.parameters())
    linear = nn.Linear(6, 5, bias=bias, dtype=F64)
    z = torch.randn(3, 6, dtype=F64)
    low = MatrixFactorizedLinear.from_linear(linear, max_rank_fraction=1.0)
    assert low.ranks == (5, 5)
    assert (low(z) - linear(z)).abs().max() < 1e-10
    assert low.dense_parameter_count() == sum(p.numel() for p in linear.parameters())


def test_tolerance_init_error_within_hosvd_bound():
    """HOSVD init with tau: ‖W − W_tucker‖_F ≤ sqrt(|A|)·τ‖W‖_F (truncated-HOSVD bound)."""
    conv = nn.Conv2d(8, 10, 3, dtype=F64)
    tau = 0.3
    layer = TuckerFactorizedConv2d.from_conv(conv, tau=tau, max_rank_fraction=1.0, min_rank=1)
    assert layer.ranks[0] < 10 or layer.ranks[1] < 8
    err = torch.linalg.vector_norm(layer.dense_weight() - conv.weight)
    assert err <= math.sqrt(2) * tau * torch.linalg.vector_norm(conv.weight) + 1e-12


def test_groups_and_padding_mode_rejected_with_layer_name():
    """Grouped convolutions and non-zero padding modes raise errors naming the layer."""
    with pytest.raises(ValueError, match="groups=2"):
        TuckerFactorizedConv2d(4, 4, 3, groups=2)
    with pytest.raises(ValueError, match=r"'block\.conv'"):
        TuckerFactorizedConv2d.from_conv(nn.Conv2d(4, 4, 3, groups=4), name="block.conv")
    with pytest.raises(ValueError, match="padding_mode"):
        MatrixFactorizedConv2d.from_conv(nn.Conv2d(4, 4, 3, padding_mode="reflect"), name="c")


def test_initial_rank_above_rmax_rejected():
    """An initial rank above r_max = ⌊n/2⌋ raises instead of building inconsistent shapes (spec §5)."""
    with pytest.raises(ValueError, match="r_max=4"):
        TuckerFactorizedConv2d(8, 8, 3, ranks=5)


def test_worked_example_counts():
    """metrics.md §4: 64→64 3×3 Tucker at (16, 16) stores 4,370 parameters; dense 36,864 (+64 bias)."""
    layer = TuckerFactorizedConv2d(64, 64, 3, padding=1, ranks=(16, 16, 3, 3))
    assert layer.stored_parameter_count() == 4370
    assert layer.eval_parameter_count() == 4370
    assert layer.dense_parameter_count() == 36864 + 64
    wide = (32, 32, 3, 3)
    expected_train = (2 * 64 * 16 + 18) + (2 * 64 * 32 + 18) + 16 * 16 * 9 + 32 * 32 * 9 + (2 * 32 * 16 + 18)
    assert layer.augmented_ranks() == wide
    assert layer.train_parameter_count_tucker() == expected_train


def test_matrix_counts():
    """Matrix layer: eval (n + m) r and DLRT-Net train 4(n + m) r + 8r² (metrics.md §8.4)."""
    layer = MatrixFactorizedLinear(30, 20, ranks=4)
    assert layer.eval_parameter_count() == (20 + 30) * 4
    assert layer.train_parameter_count_dlrt() == 4 * 50 * 4 + 8 * 16
    assert layer.stored_parameter_count() == 50 * 4 + 16


def test_free_factors_are_plain_trainable_parameters():
    """free_factors=True (vanilla baseline) makes every factor trainable by a plain optimizer."""
    layer = TuckerFactorizedConv2d(4, 6, 3, ranks=(2, 2, 3, 3), free_factors=True)
    assert all(u.requires_grad for u in layer.factors)
    opt = torch.optim.SGD(layer.parameters(), lr=0.5)
    before = [u.detach().clone() for u in layer.factors]
    layer(torch.randn(2, 4, 6, 6)).square().sum().backward()
    opt.step()
    assert all(not torch.equal(b, u) for b, u in zip(before, layer.factors, strict=True))


def test_state_dict_loads_across_ranks():
    """A layer loads a state_dict saved at other ranks and then computes what the saved layer computed."""
    source = TuckerFactorizedConv2d(6, 6, 3, ranks=(2, 3, 3, 3), dtype=F64)
    target = TuckerFactorizedConv2d(6, 6, 3, ranks=(3, 1, 3, 3), dtype=F64)
    target.load_state_dict(source.state_dict())
    assert target.ranks == source.ranks
    x = torch.randn(1, 6, 5, 5, dtype=F64)
    assert torch.equal(target(x), source(x))


def test_adaptive_spatial_modes_capped_at_kernel_size():
    """With all modes adaptive, a 3×3 spatial mode has r_max = 3, not ⌊3/2⌋ = 1 (spec §5), and starts full."""
    layer = TuckerFactorizedConv2d(8, 6, 3, ranks=2, adaptive_modes=(0, 1, 2, 3))
    assert layer.max_ranks == (3, 4, 3, 3)
    assert layer.ranks == (2, 2, 3, 3)

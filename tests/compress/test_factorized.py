"""Factorized layers: exactness at full rank, optimal truncation, preserved hyper-parameters, cost counts."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from slimtrain.layers import LowRankLinear, SVDConv2d, TuckerConv2d, build_layer, layer_config, layer_type_of

conv_settings = st.fixed_dictionaries(
    {
        "groups": st.sampled_from([1, 2]),
        "kernel": st.sampled_from([(1, 1), (3, 3), (3, 1)]),
        "stride": st.integers(1, 2),
        "padding": st.integers(0, 2),
        "dilation": st.integers(1, 2),
        "bias": st.booleans(),
        "padding_mode": st.sampled_from(["zeros", "reflect", "circular"]),
    }
)


def _conv(s: dict, in_channels: int = 4, out_channels: int = 6) -> nn.Conv2d:
    return nn.Conv2d(
        in_channels,
        out_channels,
        s["kernel"],
        stride=s["stride"],
        padding=s["padding"],
        dilation=s["dilation"],
        groups=s["groups"],
        bias=s["bias"],
        padding_mode=s["padding_mode"],
    ).double()


@settings(max_examples=10)
@given(conv_settings)
def test_svd_conv_full_rank_equals_dense(settings):
    """At full rank the k×k + 1×1 pair computes the dense conv (stride/padding/dilation/groups/bias kept)."""
    conv = _conv(settings)
    full = min(
        conv.out_channels // conv.groups,
        conv.in_channels // conv.groups * conv.kernel_size[0] * conv.kernel_size[1],
    )
    layer = SVDConv2d.from_conv(conv, full)
    x = torch.randn(2, 4, 9, 9, dtype=torch.float64)
    torch.testing.assert_close(layer(x), conv(x), rtol=1e-9, atol=1e-9)
    assert layer.reduce.groups == layer.expand.groups == conv.groups
    assert layer.reduce.stride == conv.stride and layer.reduce.dilation == conv.dilation
    assert layer.reduce.padding_mode == conv.padding_mode


@settings(max_examples=8)
@given(st.sampled_from([(1, 1), (3, 3)]), st.booleans(), st.integers(1, 2))
def test_tucker_conv_full_rank_equals_dense(kernel, bias, stride):
    """At full Tucker ranks the 1×1 → k×k → 1×1 triple computes the dense conv, for every padding mode."""
    for mode in ("zeros", "reflect"):
        conv = nn.Conv2d(4, 6, kernel, stride=stride, padding=1, bias=bias, padding_mode=mode).double()
        layer = TuckerConv2d.from_conv(conv, 6, 4)
        x = torch.randn(2, 4, 7, 7, dtype=torch.float64)
        torch.testing.assert_close(layer(x), conv(x), rtol=1e-9, atol=1e-9)


def test_svd_truncation_is_the_best_rank_r_approximation():
    """The reconstructed kernel's error equals the norm of the discarded singular values (Eckart–Young)."""
    conv = nn.Conv2d(5, 7, 3).double()
    s = torch.linalg.svdvals(conv.weight.detach().flatten(1))
    for rank in (1, 3, 5):
        kernel = SVDConv2d.from_conv(conv, rank).to_dense().weight
        error = torch.linalg.matrix_norm((kernel - conv.weight).flatten(1))
        torch.testing.assert_close(error, s[rank:].norm(), rtol=1e-9, atol=1e-12)


def test_low_rank_linear_full_rank_and_truncation():
    """Full rank reproduces the linear; rank r reconstructs the best rank-r weight."""
    linear = nn.Linear(6, 4).double()
    x = torch.randn(3, 6, dtype=torch.float64)
    torch.testing.assert_close(LowRankLinear.from_linear(linear, 4)(x), linear(x))
    low = LowRankLinear.from_linear(linear, 2)
    s = torch.linalg.svdvals(linear.weight.detach())
    error = torch.linalg.matrix_norm(low.to_dense().weight - linear.weight)
    torch.testing.assert_close(error, s[2:].norm(), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(low(x), low.to_dense()(x))


def test_tucker_to_dense_matches_forward():
    """The reconstructed Tucker kernel gives the same outputs as the three-stage layer at truncated ranks."""
    conv = nn.Conv2d(6, 8, 3, stride=2, padding=1, dilation=1).double()
    layer = TuckerConv2d.from_conv(conv, 3, 2)
    x = torch.randn(2, 6, 9, 9, dtype=torch.float64)
    torch.testing.assert_close(layer(x), layer.to_dense()(x))


def test_worked_example_parameter_counts():
    """metrics.md §4, 64→64 3×3 conv: SVD r=16 stores 10,240 weights; Tucker (16,16) 4,370 − 18.

    The 18 are the two 3×3 identity spatial factors, which the three-stage layer does not store.
    """
    svd = SVDConv2d(64, 64, 3, 16, padding=1, bias=False)
    tucker = TuckerConv2d(64, 64, 3, 16, 16, padding=1, bias=False)
    assert sum(p.numel() for p in svd.parameters()) == 10_240
    assert sum(p.numel() for p in tucker.parameters()) == 4_370 - 2 * 9


def test_rank_out_of_range_rejected():
    """A rank above the full rank or below 1 raises, naming the argument."""
    with pytest.raises(ValueError, match="rank"):
        SVDConv2d(4, 6, 3, rank=7)
    with pytest.raises(ValueError, match="rank_in"):
        TuckerConv2d(4, 6, 3, rank_out=2, rank_in=0)
    with pytest.raises(ValueError, match="groups=1"):
        TuckerConv2d.from_conv(nn.Conv2d(4, 4, 3, groups=2), 2, 2)


@pytest.mark.parametrize(
    "layer",
    [
        SVDConv2d(
            4,
            6,
            (3, 1),
            2,
            stride=2,
            padding=(1, 0),
            dilation=2,
            groups=2,
            bias=False,
            padding_mode="reflect",
        ),
        TuckerConv2d(4, 6, 3, 2, 3, stride=2, padding="valid"),
        LowRankLinear(5, 4, 2, bias=False),
    ],
)
def test_config_round_trip(layer):
    """build_layer(key, layer_config(layer)) rebuilds a layer with the same config and parameter shapes."""
    rebuilt = build_layer(layer_type_of(layer).key, layer_config(layer))
    assert layer_config(rebuilt) == layer_config(layer)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in layer.state_dict().items()
    }


@settings(max_examples=12)
@given(
    st.integers(1, 5),
    st.integers(1, 5),
    st.booleans(),
    st.sampled_from(["nchw", "channels_last", "unbatched", "sliced"]),
    st.integers(1, 3),
)
def test_pointwise_conv_computes_the_1x1_convolution(c_in, c_out, bias, layout, batch):
    """The matrix-product 1×1 conv (``PointwiseConv2d``, ``pointwise_conv2d``) equals ``nn.Conv2d`` with the
    same weights in every input layout, and so do the weight and input gradients (the fast path must not
    change the function it stands for).
    """
    from slimtrain.layers import PointwiseConv2d

    torch.manual_seed(0)
    fast = PointwiseConv2d(c_in, c_out, bias=bias).double()
    reference = nn.Conv2d(c_in, c_out, 1, bias=bias).double()
    reference.load_state_dict(fast.state_dict())
    x = torch.randn(batch, c_in, 5, 7, dtype=torch.float64)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "unbatched":
        x = x[0]
    elif layout == "sliced":
        x = torch.randn(batch, c_in, 5, 14, dtype=torch.float64)[..., ::2]
    x.requires_grad_(True)
    out, expected = fast(x), reference(x)
    torch.testing.assert_close(out, expected)
    (grad_fast,) = torch.autograd.grad(out.square().sum(), x)
    (grad_reference,) = torch.autograd.grad(expected.square().sum(), x)
    torch.testing.assert_close(grad_fast, grad_reference)
    fast(x).square().sum().backward()
    reference(x).square().sum().backward()
    torch.testing.assert_close(fast.weight.grad, reference.weight.grad)

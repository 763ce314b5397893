"""Model-level SVD and Tucker decomposition: rank rule, copies, equivalence, cost warnings."""

import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from slimtrain.compress import (
    FactorizationCostWarning,
    LayersLeftDenseWarning,
    LowRankLinear,
    SVDConv2d,
    TuckerConv2d,
    densify,
    kept_rank,
    svd_decompose,
    tucker_decompose,
)

from .toy_models import build, example_input


@given(st.integers(1, 300), st.sampled_from([0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 0.95, 1.0]))
def test_kept_rank_rule(full, s):
    """Rank r = max(1, ⌊(1 − s)·R⌋) exactly for decimal levels, never below 1 or above R."""
    expected = max(1, (round((1 - s) * 100) * full) // 100)
    assert kept_rank(full, s) == expected
    assert 1 <= kept_rank(full, s) <= full


def test_kept_rank_rejects_bad_level():
    """A reduction outside [0, 1] raises."""
    with pytest.raises(ValueError, match="reduction"):
        kept_rank(10, 1.5)


@pytest.mark.parametrize("name", ["resnet_b", "vgg"])
def test_svd_decompose_replaces_every_conv_and_leaves_input(name):
    """Every conv becomes an SVDConv2d with the uniform rank; the input model's state is unchanged."""
    model = build(name)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FactorizationCostWarning)
        result = svd_decompose(model, 0.5)
    assert not any(isinstance(m, nn.Conv2d) for m in result.modules() if not _inside_factorized(result, m))
    for name_, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            factored = result.get_submodule(name_)
            kh, kw = module.kernel_size
            assert factored.rank == kept_rank(min(module.out_channels, module.in_channels * kh * kw), 0.5)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])


def _inside_factorized(model, module):
    return any(
        module in list(f.modules()) for f in model.modules() if isinstance(f, (SVDConv2d, TuckerConv2d))
    )


@settings(max_examples=6)
@given(st.sampled_from([0.0, 0.3, 0.6, 0.9]))
def test_svd_exported_equals_reconstructed(reduction):
    """The factorized model computes the same outputs as the dense model with reconstructed kernels."""
    model = build("vgg")
    x = example_input()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FactorizationCostWarning)
        result = svd_decompose(model, reduction, include_linear=True)
    assert any(isinstance(m, LowRankLinear) for m in result.modules())
    torch.testing.assert_close(result(x), densify(result)(x), rtol=1e-9, atol=1e-9)
    if reduction == 0.0:
        torch.testing.assert_close(result(x), model(x), rtol=1e-9, atol=1e-9)


@settings(max_examples=6)
@given(st.sampled_from([0.0, 0.3, 0.6, 0.9]))
def test_tucker_exported_equals_reconstructed(reduction):
    """The Tucker model equals its reconstruction, and the original model at reduction 0."""
    model = build("resnet_b")
    x = example_input()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FactorizationCostWarning)
        result = tucker_decompose(model, reduction)
    assert sum(isinstance(m, TuckerConv2d) for m in result.modules()) == 8
    torch.testing.assert_close(result(x), densify(result)(x), rtol=1e-9, atol=1e-9)
    if reduction == 0.0:
        torch.testing.assert_close(result(x), model(x), rtol=1e-9, atol=1e-9)


def test_cost_warning_only_when_more_expensive():
    """Full rank of a 4→4 3×3 conv (4·(36+4) > 144) warns, naming the layer; a cheap rank does not warn."""
    model = nn.Sequential(nn.Conv2d(4, 4, 3))
    with pytest.warns(FactorizationCostWarning, match="'0'"):
        svd_decompose(model, 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FactorizationCostWarning)
        svd_decompose(model, 0.75)
        tucker_decompose(nn.Sequential(nn.Conv2d(8, 8, 3)), 0.75)
    with pytest.warns(FactorizationCostWarning):
        tucker_decompose(nn.Sequential(nn.Conv2d(8, 8, 1, stride=2)), 0.0)


def test_explicit_layers_and_ranks():
    """Only the named layers are factorized, with the given ranks; unknown names and grouped Tucker raise."""
    model = build("vgg")
    result = svd_decompose(model, 0.5, layers=["features.3", "classifier.1"], ranks={"classifier.1": 3})
    assert isinstance(result.features[3], SVDConv2d) and isinstance(result.features[0], nn.Conv2d)
    assert result.classifier[1].rank == 3
    with pytest.raises(KeyError, match="nope"):
        svd_decompose(model, 0.5, layers=["nope"])
    with pytest.raises(KeyError, match=r"features\.0"):
        svd_decompose(model, 0.5, layers=["features.3"], ranks={"features.0": 2})
    grouped = nn.Sequential(nn.Conv2d(4, 4, 3, groups=2))
    with pytest.raises(ValueError, match=r"'0'.*groups=1"):
        tucker_decompose(grouped, 0.5, layers=["0"])
    with pytest.warns(LayersLeftDenseWarning, match=r"'1'.*groups=2"):  # left dense by default
        mixed = tucker_decompose(nn.Sequential(nn.Conv2d(4, 4, 1), grouped[0]), 0.5)
    assert type(mixed[1]) is nn.Conv2d

import pytest
import torch
import torch.nn.utils.prune as prune
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from slimtrain.layers import TTLinear
from slimtrain.metrics import (
    conv2d_macs,
    conv_output_size,
    count_macs,
    count_parameters,
    cr_percent,
    summarize,
    svd_conv_macs,
    svd_linear_macs,
    theoretical_speedup,
    tucker_conv_macs,
    tucker_parameter_count,
)

# metrics.md §4 worked example: 3×3 conv, 64 → 64, stride 1, padding 1, 32×32 input.
C, K, HW, R = 64, 3, 32, 16


class SVDConv(nn.Module):
    """SVD pair: k×k conv C_in → r, then 1×1 conv r → C_out (replaces a bias-free conv)."""

    def __init__(self, c_in, c_out, r, k, padding):
        super().__init__()
        self.first = nn.Conv2d(c_in, r, k, padding=padding, bias=False)
        self.second = nn.Conv2d(r, c_out, 1, bias=False)
        self.dense = c_out * c_in * k * k

    def dense_parameter_count(self):
        return self.dense

    def forward(self, x):
        return self.second(self.first(x))


class TuckerConv(nn.Module):
    """Tucker-2 three-stage conv: 1×1 C_in → r₂, k×k r₂ → r₁, 1×1 r₁ → C_out."""

    def __init__(self, c_in, c_out, r1, r2, k, padding):
        super().__init__()
        self.project = nn.Conv2d(c_in, r2, 1, bias=False)
        self.core = nn.Conv2d(r2, r1, k, padding=padding, bias=False)
        self.restore = nn.Conv2d(r1, c_out, 1, bias=False)
        self.dense = c_out * c_in * k * k

    def dense_parameter_count(self):
        return self.dense

    def forward(self, x):
        return self.restore(self.core(self.project(x)))


@pytest.fixture
def example():
    return torch.randn(1, C, HW, HW)


def test_worked_example_dense(example):
    """Dense 3×3 conv: 36,864 parameters and 37,748,736 MACs, from hooks, FlopCounterMode and formula."""
    conv = nn.Conv2d(C, C, K, padding=1, bias=False)
    macs = count_macs(conv, example)
    assert count_parameters(conv).dense == 36_864
    assert macs.executed == macs.layers[0].dense == 37_748_736
    assert conv2d_macs(C, C, HW, HW, (K, K)) == 37_748_736


def test_worked_example_svd_pair(example):
    """SVD pair r = 16: 10,240 parameters, 10,485,760 MACs (formula = hooks), speedup 3.6, c.r. 72.2%."""
    dense = nn.Conv2d(C, C, K, padding=1, bias=False)
    model = nn.Sequential(SVDConv(C, C, R, K, padding=1))
    formula = svd_conv_macs(C, C, R, (K, K), HW, HW)
    assert formula == 10_485_760
    plain = nn.Sequential(model[0].first, model[0].second)  # the same modules, unwrapped
    assert sum(layer.dense for layer in count_macs(plain, example).layers) == formula
    s = summarize(model, example, reference=dense)
    assert s["params_stored_all"] == 10_240
    assert s["macs_effective"] == formula and s["macs_dense"] == 37_748_736
    assert s["theoretical_speedup"] == pytest.approx(3.6)
    assert cr_percent(s["params_stored_all"], s["params_dense_all"]) == pytest.approx(72.2, abs=0.05)


def test_worked_example_tucker(example):
    """Tucker r₁ = r₂ = 16: formula 4,456,448 MACs = hook count, 4,370 stored (Σn_ir_i + ∏r_i), speedup 8.47.

    Built from plain Conv2d layers the core absorbs the two 3×3 spatial factors, so the module stores
    4,370 − 2·9 = 4,352 parameters.
    """
    dense = nn.Conv2d(C, C, K, padding=1, bias=False)
    model = TuckerConv(C, C, R, R, K, padding=1)
    formula = tucker_conv_macs(C, C, R, R, (K, K), (HW, HW), (HW, HW))
    assert formula == 4_456_448
    plain = nn.Sequential(model.project, model.core, model.restore)
    assert sum(layer.dense for layer in count_macs(plain, example).layers) == formula
    stored = tucker_parameter_count((C, C, K, K), (R, R, K, K))
    assert stored == 4_370
    assert count_parameters(model).stored == stored - 2 * K * K
    s = summarize(model, example, reference=dense)
    assert s["macs_effective"] == formula
    assert s["theoretical_speedup"] == pytest.approx(8.47, abs=0.005)
    assert cr_percent(stored, 36_864) == pytest.approx(88.1, abs=0.05)


def test_svd_linear_formula_matches_hooks():
    """Rank-r Linear n×m: r·(n + m) MACs per token, equal to the hook count of its two Linear factors."""
    n, m, r, tokens = 12, 7, 3, 5
    model = nn.Sequential(nn.Linear(m, r, bias=False), nn.Linear(r, n))
    macs = count_macs(model, torch.randn(2, tokens, m))
    assert macs.executed == sum(layer.dense for layer in macs.layers) == svd_linear_macs(n, m, r) * tokens


@settings(max_examples=20)  # each example runs FlopCounterMode; 20 cover the parameter grid well
@given(
    c_in_groups=st.integers(1, 3),
    c_out_groups=st.integers(1, 3),
    groups=st.integers(1, 3),
    kernel=st.integers(1, 4),
    stride=st.integers(1, 2),
    padding=st.integers(0, 1),
    dilation=st.integers(1, 2),
    size=st.integers(7, 11),
)
def test_conv_hooks_match_brute_force(
    c_in_groups, c_out_groups, groups, kernel, stride, padding, dilation, size
):
    """Hook MACs = C_out·H_out·W_out·(C_in/groups)·k², brute force from the real output shape.

    Covers padding 0/1, stride 1/2, groups > 1 and dilation 2; H_out also matches PyTorch's rule, and
    FlopCounterMode agrees.
    """
    c_in, c_out = c_in_groups * groups, c_out_groups * groups
    conv = nn.Conv2d(c_in, c_out, kernel, stride, padding, dilation, groups, bias=False)
    x = torch.randn(2, c_in, size, size + 1)
    h = conv_output_size(size, kernel, stride, padding, dilation)
    w = conv_output_size(size + 1, kernel, stride, padding, dilation)
    assert conv(x).shape[2:] == (h, w)
    brute = c_out * h * w * c_in_groups * kernel * kernel
    macs = count_macs(conv, x)
    assert macs.layers[0].dense == brute == conv2d_macs(c_in, c_out, h, w, (kernel, kernel), groups)
    assert macs.executed == brute


def test_lenet5_and_resnet_hand_counted_macs(lenet5, resnet2):
    """LeNet-5 at 32×32: 117,600 + 240,000 + 58,920 MACs; the two-block ResNet at 8×8: 145,056 MACs."""
    assert count_macs(lenet5, torch.randn(3, 1, 32, 32)).executed == 117_600 + 240_000 + 58_920
    # stem 13,824; block1 2·36,864; block2 18,432 + 36,864 + shortcut 2,048; fc 160
    macs = count_macs(resnet2, torch.randn(2, 3, 8, 8))
    assert macs.executed == 13_824 + 2 * 36_864 + 18_432 + 36_864 + 2_048 + 160
    assert sum(layer.dense for layer in macs.layers) == macs.executed


def test_effective_macs_scale_with_layer_density(lenet5):
    """Masking half of fc1 and a quarter of conv1 removes exactly those fractions of their MACs."""
    x = torch.randn(1, 1, 32, 32)
    prune.l1_unstructured(lenet5.fc1, "weight", amount=0.5)
    prune.l1_unstructured(lenet5.conv1, "weight", amount=0.2)  # 30 of 150 weights
    macs = count_macs(lenet5, x)
    assert macs.executed == 416_520
    assert macs.effective == pytest.approx(416_520 - 48_000 / 2 - 117_600 * 0.2)


def test_count_macs_leaves_model_state_alone(resnet2):
    """Counting runs in eval mode without touching BN statistics and restores the training flag."""
    before = resnet2.bn.running_mean.clone()
    count_macs(resnet2.train(), torch.randn(2, 3, 8, 8))
    assert resnet2.training and torch.equal(resnet2.bn.running_mean, before)


def test_speedup_below_one_is_flagged():
    """theoretical_speedup < 1 emits a warning; ≥ 1 does not."""
    with pytest.warns(UserWarning, match="< 1"):
        assert theoretical_speedup(10, 20) == 0.5
    assert theoretical_speedup(20, 10) == 2.0


@pytest.mark.parametrize("batch", [1, 7, 64])
def test_tt_layers_count_as_the_dense_product_at_every_batch_size(batch):
    """metrics.md §4: an NN-BCD TT layer (dense weight rebuilt every forward) counts in·out MACs per sample,
    the dense layer's count, whatever batch the reconstruction is spread over; speed-up 1 against it.
    """
    torch.manual_seed(0)
    dense = nn.Sequential(nn.Linear(48, 64, bias=False), nn.ReLU(), nn.Linear(64, 10, bias=False))
    tt = TTLinear.from_weight(dense[0].weight.detach(), (4, 4, 4, 4, 3, 4), 4)
    model = nn.Sequential(tt, nn.ReLU(), dense[2])
    macs = count_macs(model, torch.randn(batch, 48))
    assert macs.factorized == {"0": 48 * 64}
    assert macs.executed == macs.effective == 48 * 64 + 64 * 10
    assert summarize(model, torch.randn(batch, 48), reference=dense)["theoretical_speedup"] == 1.0

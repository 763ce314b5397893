"""Model conversion and the compression report (spec tdlrt.md §2.6, metrics.md §3, §8.4)."""

import pytest
import torch
from torch import nn

from slimtrain.layers import MatrixFactorizedConv2d, MatrixFactorizedLinear, TuckerFactorizedConv2d
from slimtrain.lowrank import convert_to_lowrank, factorized_layers, lowrank_report, to_dense_model

F64 = torch.float64


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.body = nn.Sequential(
            nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.ReLU(), nn.Conv2d(8, 6, 3, stride=2)
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(6 * 3 * 3, 10), nn.ReLU(), nn.Linear(10, 4))

    def forward(self, x):
        return self.head(self.body(torch.relu(self.stem(x))))


def test_default_conversion_keeps_first_conv_and_last_linear_dense():
    """Defaults: Tucker convs and low-rank linears everywhere except the first conv and the last linear."""
    model = Net()
    replaced = convert_to_lowrank(model)
    assert sorted(replaced) == ["body.0", "body.2", "head.1"]
    assert isinstance(model.stem, nn.Conv2d) and isinstance(model.head[3], nn.Linear)
    assert isinstance(model.body[0], TuckerFactorizedConv2d) and isinstance(
        model.head[1], MatrixFactorizedLinear
    )
    assert model.body[0].bias is None
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 4)


def test_conversion_options():
    """skip, conv='matrix', linear=None and keep_* flags select the replaced layers."""
    model = Net()
    replaced = convert_to_lowrank(
        model, conv="matrix", linear=None, skip=("body.2",), keep_first_conv_dense=False
    )
    assert sorted(replaced) == ["body.0", "stem"]
    assert all(isinstance(m, MatrixFactorizedConv2d) for m in replaced.values())
    with pytest.raises(ValueError, match="nothere"):
        convert_to_lowrank(Net(), skip=("nothere",))


def test_grouped_conv_error_names_the_layer():
    """A grouped convolution raises an error naming its module."""
    model = nn.Sequential(nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 3, groups=2))
    with pytest.raises(ValueError, match="layer '1'"):
        convert_to_lowrank(model)


@pytest.mark.parametrize("conv", ["tucker", "matrix"])
def test_from_weights_at_full_rank_is_exact(conv):
    """init='from_weights' at full rank reproduces the trained model's outputs (float64, 1e-10)."""
    model = Net().to(F64)
    x = torch.randn(2, 3, 8, 8, dtype=F64)
    expected = model(x)
    convert_to_lowrank(model, conv=conv, init="from_weights", max_rank_fraction=1.0)
    assert (model(x) - expected).abs().max() < 1e-10
    to_dense_model(model)
    assert not factorized_layers(model)
    assert (model(x) - expected).abs().max() < 1e-10


def test_random_init_ignores_trained_weights_and_tau_lowers_ranks():
    """init='random' draws fresh kernels; tau chooses ranks no larger than r_max."""
    model = Net().to(F64)
    with torch.no_grad():
        model.body[0].weight.fill_(1.0)
    convert_to_lowrank(model, init="random")
    assert model.body[0].dense_weight().std() > 0.01
    model = Net().to(F64)
    replaced = convert_to_lowrank(
        model, init="from_weights", tau=0.5, max_rank_fraction=1.0, tucker_min_rank=1
    )
    assert any(
        r < n for layer in replaced.values() for r, n in zip(layer.ranks, layer.mode_sizes, strict=True)
    )


def test_report_counts_by_hand():
    """Eval/train counts and the four c.r. fields match hand calculations on a toy model (metrics.md §8.4)."""
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 4 * 4, 20), nn.ReLU(), nn.Linear(20, 3)
    )
    convert_to_lowrank(model, ranks=3)
    report = lowrank_report(model)
    (layer,) = report["layers"]
    assert layer["ranks"] == (3, 3)
    n, m, r = 20, 64, 3
    assert layer["eval_count"] == (n + m) * r
    assert layer["train_count_dlrt"] == 4 * (n + m) * r + 8 * r * r
    assert layer["cr_percent_train_dlrt"] == pytest.approx(
        100 * (1 - (4 * (n + m) * r + 8 * r * r) / (n * m))
    )
    other = 4 * 9 + 20 * 3
    full = other + n * m
    assert report["dense_weights_other"] == other
    assert report["cr_percent_eval_dlrt_convention"] == pytest.approx(
        100 * (1 - round((other + 252) / full, 3))
    )
    assert report["cr_percent_eval_factorized_only"] == pytest.approx(100 * (1 - 252 / (n * m)))
    train_dlrt = 4 * (n + m) * r + 8 * r * r
    assert report["cr_percent_train_dlrt"] == pytest.approx(100 * (1 - round((other + train_dlrt) / full, 3)))
    wide = 6
    train_tucker = (n + m) * r + (n + m) * wide + r * r + wide * wide + 2 * wide * r
    assert report["cr_percent_train_tucker"] == pytest.approx(100 * (1 - (other + train_tucker) / full))


def test_report_with_tucker_layers():
    """With a Tucker layer the DLRT-Net training rate is None and eval counts are Σn_ir_i + ∏r_i."""
    model = Net()
    convert_to_lowrank(model, ranks=2)
    report = lowrank_report(model)
    assert report["cr_percent_train_dlrt"] is None
    tucker = next(entry for entry in report["layers"] if entry["name"] == "body.0")
    assert tucker["eval_count"] == 8 * 2 * 2 + 9 * 2 + 2 * 2 * 9
    assert report["ranks_per_layer"]["head.1"] == (2, 2)

"""The export protocol: every registered layer type round-trips; subclasses keep their class; ties survive."""

import warnings

import pytest
import torch
from torch import nn

from slimtrain.compress import load_exported, read_manifest, remove_channels, save_exported
from slimtrain.compress.filter_pruning import filter_pruning_plan
from slimtrain.layers import (
    LAYER_TYPES,
    LowRankLinear,
    PointwiseConv2d,
    SparseLinear,
    SVDConv2d,
    TTLinear,
    TuckerConv2d,
    build_layer,
    layer_config,
    layer_type_of,
    register_layer_type,
)
from slimtrain.layers.specs import V1_TYPE_NAMES

# One small instance per registered key; a new registration without an example here fails the coverage test.
EXAMPLES = {
    "torch.nn.Conv1d": lambda: nn.Conv1d(3, 4, 3, padding=1),
    "torch.nn.Conv2d": lambda: nn.Conv2d(3, 4, 3, stride=2, padding="valid", bias=False),
    "torch.nn.Linear": lambda: nn.Linear(6, 5),
    "torch.nn.BatchNorm1d": lambda: nn.BatchNorm1d(5, eps=1e-3),
    "torch.nn.BatchNorm2d": lambda: nn.BatchNorm2d(4, momentum=None),
    "torch.nn.Identity": nn.Identity,
    "torch.nn.Conv3d": lambda: nn.Conv3d(3, 4, 2, dilation=(1, 2, 1)),
    "torch.nn.ConvTranspose1d": lambda: nn.ConvTranspose1d(3, 4, 3, stride=2, output_padding=1),
    "torch.nn.ConvTranspose2d": lambda: nn.ConvTranspose2d(
        3, 4, 4, stride=2, padding=1, groups=1, bias=False
    ),
    "torch.nn.ConvTranspose3d": lambda: nn.ConvTranspose3d(
        2, 4, 2, stride=(1, 2, 2), output_padding=(0, 1, 0)
    ),
    "torch.nn.BatchNorm3d": lambda: nn.BatchNorm3d(4, affine=False),
    "slimtrain.PointwiseConv2d": lambda: PointwiseConv2d(4, 3),
    "slimtrain.SVDConv2d": lambda: SVDConv2d.from_conv(nn.Conv2d(4, 6, 3, padding=1), 2),
    "slimtrain.LowRankLinear": lambda: LowRankLinear.from_linear(nn.Linear(8, 6), 3),
    "slimtrain.TuckerConv2d": lambda: TuckerConv2d.from_conv(nn.Conv2d(4, 6, 3, padding=1), 3, 2),
    "slimtrain.SparseLinear": lambda: SparseLinear.from_linear(_sparse_linear()),
    "slimtrain.TTLinear": lambda: TTLinear.from_weight(torch.randn(4, 4), (2, 2, 2, 2), 2),
}
INPUTS = {
    "torch.nn.Conv1d": (2, 3, 7),
    "torch.nn.Conv2d": (2, 3, 7, 7),
    "torch.nn.Linear": (2, 6),
    "torch.nn.BatchNorm1d": (3, 5),
    "torch.nn.BatchNorm2d": (3, 4, 2, 2),
    "torch.nn.Identity": (2, 3),
    "torch.nn.Conv3d": (2, 3, 4, 5, 4),
    "torch.nn.ConvTranspose1d": (2, 3, 5),
    "torch.nn.ConvTranspose2d": (2, 3, 4, 4),
    "torch.nn.ConvTranspose3d": (2, 2, 3, 3, 3),
    "torch.nn.BatchNorm3d": (3, 4, 2, 2, 2),
    "slimtrain.PointwiseConv2d": (2, 4, 3, 3),
    "slimtrain.SVDConv2d": (2, 4, 5, 5),
    "slimtrain.LowRankLinear": (2, 8),
    "slimtrain.TuckerConv2d": (2, 4, 5, 5),
    "slimtrain.SparseLinear": (2, 6),
    "slimtrain.TTLinear": (2, 4),
}


def _sparse_linear() -> nn.Linear:
    layer = nn.Linear(6, 5)
    with torch.no_grad():
        layer.weight[layer.weight.abs() < 0.2] = 0
    return layer


def test_every_registered_type_has_an_example():
    """The parametrized tests below cover every key of LAYER_TYPES."""
    assert sorted(EXAMPLES) == LAYER_TYPES.names()


@pytest.mark.parametrize("key", sorted(EXAMPLES))
def test_registered_type_round_trips_through_its_config(key):
    """Config → build → load_state_dict gives a layer of the same class computing the same outputs."""
    torch.manual_seed(0)
    layer = EXAMPLES[key]().eval()
    assert layer_type_of(layer).key == key
    rebuilt = build_layer(key, layer_config(layer))
    assert type(rebuilt) is type(layer)
    rebuilt.load_state_dict(layer.state_dict())
    x = torch.randn(INPUTS[key])
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch's CSR "beta" notice
        torch.testing.assert_close(rebuilt.eval()(x), layer(x))


def test_keys_are_namespaced_and_every_v1_name_maps_to_one():
    """Keys are '<package>.<Class>'; each bare format-1 name maps to a registered key of that class name."""
    for key in LAYER_TYPES.names():
        assert "." in key
    for bare, key in V1_TYPE_NAMES.items():
        assert key in LAYER_TYPES and key.rsplit(".", 1)[1] == bare


def test_subclass_is_recognised_by_isinstance_and_third_party_types_register():
    """A subclass is known through its nearest registered class; a third-party class registers by key."""

    class Scaled(nn.Linear):
        pass

    assert layer_type_of(Scaled(2, 3)).key == "torch.nn.Linear"
    assert layer_type_of(nn.ReLU()) is None

    class Doubler(nn.Module):
        def __init__(self, width: int):
            super().__init__()
            self.width = width

        def forward(self, x):
            return 2 * x

        def config(self):
            return {"width": self.width}

    with LAYER_TYPES.scratch():
        register_layer_type("tests.Doubler", Doubler)
        assert type(build_layer("tests.Doubler", {"width": 3})) is Doubler
        with pytest.raises(ValueError, match="namespaced"):
            register_layer_type("Doubler", Doubler)
    assert "tests.Doubler" not in LAYER_TYPES


class BatchNormReLU(nn.BatchNorm2d):
    """A BatchNorm with a fused activation, as timm's BatchNormAct2d."""

    def forward(self, x):
        return torch.relu(super().forward(x))


class ActNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = BatchNormReLU(8)
        self.conv2 = nn.Conv2d(8, 4, 3, padding=1)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        return self.head(self.conv2(self.bn1(self.conv1(x))).mean((2, 3)))


def test_thinned_batchnorm_subclass_is_recorded_as_a_reshape_and_keeps_its_class(tmp_path):
    """Filter pruning thins a BatchNorm subclass with a fused activation; the export records its new size as
    a re-shape, and loading keeps the subclass (and its activation): outputs equal the thinned model's.
    """
    torch.manual_seed(0)
    model = ActNet().eval()
    x = torch.randn(2, 3, 6, 6)
    thin = remove_channels(model, filter_pruning_plan(model, 0.5, x), x).eval()
    assert thin.bn1.num_features == 4
    manifest = read_manifest(save_exported(thin, tmp_path / "m", base=ActNet))
    entry = {c["name"]: c for c in manifest["changes"]}["bn1"]
    assert (
        entry["type"] == "torch.nn.BatchNorm2d" and entry["reshape"] and entry["config"]["num_features"] == 4
    )
    loaded = load_exported(tmp_path / "m")  # the factory's import path is recorded and importable
    assert type(loaded.bn1) is BatchNormReLU and loaded.bn1.num_features == 4
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), thin(x))


class TiedNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 6)
        self.head = nn.Linear(6, 10, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, tokens):
        return self.head(self.embed(tokens))


def test_tied_tensors_are_stored_once_and_stay_tied(tmp_path):
    """A weight shared by two modules is written once, listed under both names, and tied again on load."""
    torch.manual_seed(0)
    model = TiedNet().eval()
    manifest = read_manifest(save_exported(model, tmp_path / "m", base=TiedNet))
    assert manifest["tied_tensors"] == [["embed.weight", "head.weight"]]
    from safetensors.torch import load_file

    assert sorted(load_file(str(tmp_path / "m" / "model.safetensors"))) == ["embed.weight"]
    loaded = load_exported(tmp_path / "m")
    assert loaded.head.weight is loaded.embed.weight
    tokens = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(tokens), model(tokens))
    assert sum(p.numel() for p in loaded.parameters()) == 60

"""One rule decides which layers SVD, Tucker, CSR storage and the low-rank conversion replace.

Every operator × every case of the rule (slimtrain.layers.replacement): a layer the rule refuses is left as
it is (outputs unchanged) and named, with its type and reason, in the one LayersLeftDenseWarning of the
call; a refused layer named explicitly, or a call with nothing to replace, raises UnsupportedModelError.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune
from torch.nn.utils.parametrizations import weight_norm

from slimtrain import compress, lowrank
from slimtrain.compress import svd_decompose, to_sparse_linear, tucker_decompose
from slimtrain.errors import UnsupportedModelError
from slimtrain.layers import REPLACEABLE_SUBCLASSES, LayersLeftDenseWarning
from slimtrain.lowrank import convert_to_lowrank

F64 = torch.float64
DENSE = (nn.Conv1d, nn.Conv2d, nn.Linear)


class ReluConv2d(nn.Conv2d):
    """A subclass with its own forward that computes something else than nn.Conv2d."""

    def forward(self, x):
        return torch.relu(super().forward(x))


class ReluLinear(nn.Linear):
    def forward(self, x):
        return torch.relu(super().forward(x))


class TaggedConv2d(nn.Conv2d):
    """A subclass without a forward of its own."""


class TaggedLinear(nn.Linear):
    pass


class FastConv2d(nn.Conv2d):
    """Its own forward, computing exactly nn.Conv2d's: replaceable once registered."""

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class FastLinear(nn.Linear):
    def forward(self, x):
        return F.linear(x, self.weight, self.bias)


class Attention(nn.Module):
    """A linear, then an nn.MultiheadAttention, which reads ``out_proj.weight`` without calling it."""

    def __init__(self):
        super().__init__()
        self.pre = nn.Linear(4, 4)
        self.attn = nn.MultiheadAttention(4, 2, batch_first=True)

    def forward(self, x):
        x = self.pre(x)
        return self.attn(x, x, x, need_weights=False)[0]


@dataclass(frozen=True)
class Host:
    """A model of one plain layer of the operator's kind followed by the layer under test (``probe``)."""

    model: nn.Module
    inputs: torch.Tensor
    probe: str


def conv_host(probe: nn.Module) -> Host:
    return Host(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), probe), torch.randn(2, 3, 6, 6), "1")


def linear_host(probe: nn.Module) -> Host:
    return Host(nn.Sequential(nn.Linear(6, 4), probe), torch.randn(2, 6), "1")


@dataclass(frozen=True)
class Operator:
    name: str
    kinds: frozenset[str]  # "conv", "linear"
    apply: Callable[..., nn.Module]  # (model, layers=None) -> the result
    explicit: bool = True  # takes layers=[...]


def _lowrank(conv: str) -> Callable[..., nn.Module]:
    def apply(model: nn.Module, skip: tuple[str, ...] = ()) -> nn.Module:
        result = copy.deepcopy(model)
        convert_to_lowrank(
            result,
            conv=conv,
            skip=skip,
            keep_first_conv_dense=False,
            keep_last_linear_dense=False,
            init="from_weights",
            rank_fraction=1.0,
            max_rank_fraction=1.0,
        )
        return result

    return apply


OPERATORS = [
    Operator(
        "svd",
        frozenset({"conv", "linear"}),
        lambda m, layers=None: svd_decompose(m, 0.0, include_linear=True, layers=layers),
    ),
    Operator("tucker", frozenset({"conv"}), lambda m, layers=None: tucker_decompose(m, 0.0, layers=layers)),
    Operator("csr", frozenset({"linear"}), lambda m, layers=None: to_sparse_linear(m, layers)),
    Operator("tdlrt", frozenset({"conv", "linear"}), _lowrank("tucker"), explicit=False),
    Operator("dlrt", frozenset({"conv", "linear"}), _lowrank("matrix"), explicit=False),
]

# case -> kind -> (host builder, replaced?, reason fragment when left dense)
CASES: dict[str, dict[str, tuple[Callable[[], Host], bool | dict[str, bool], str]]] = {
    "own_forward": {
        "conv": (lambda: conv_host(ReluConv2d(4, 4, 3, padding=1)), False, "ReluConv2d subclasses nn.Conv2d"),
        "linear": (lambda: linear_host(ReluLinear(4, 4)), False, "ReluLinear subclasses nn.Linear"),
    },
    "no_own_forward": {
        "conv": (lambda: conv_host(TaggedConv2d(4, 4, 3, padding=1)), True, ""),
        "linear": (lambda: linear_host(TaggedLinear(4, 4)), True, ""),
    },
    "registered": {
        "conv": (lambda: conv_host(FastConv2d(4, 4, 3, padding=1)), True, ""),
        "linear": (lambda: linear_host(FastLinear(4, 4)), True, ""),
    },
    "mha_out_proj": {
        "linear": (
            lambda: Host(Attention(), torch.randn(2, 3, 4), "attn.out_proj"),
            False,
            "owner 'attn' (MultiheadAttention) reads its parameters",
        ),
    },
    "parametrized": {
        "conv": (lambda: conv_host(weight_norm(nn.Conv2d(4, 4, 3, padding=1))), False, "parametrized"),
        "linear": (lambda: linear_host(weight_norm(nn.Linear(4, 4))), False, "parametrized"),
    },
    "pruning_hook": {
        "conv": (
            lambda: conv_host(prune.random_unstructured(nn.Conv2d(4, 4, 3), "weight", 0.5)),
            False,
            "hooks",
        ),
        "linear": (
            lambda: linear_host(prune.random_unstructured(nn.Linear(4, 4), "weight", 0.5)),
            False,
            "hook",
        ),
    },
    "conv1d": {
        "conv": (
            lambda: Host(
                nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Flatten(2), nn.Conv1d(4, 4, 3)),
                torch.randn(2, 3, 6, 6),
                "2",
            ),
            False,
            "replaces nn.Conv2d",
        ),
    },
    "grouped": {
        "conv": (
            lambda: conv_host(nn.Conv2d(4, 4, 3, padding=1, groups=2)),
            {"svd": True, "tucker": False, "tdlrt": False, "dlrt": False},  # SVD factorizes per group
            "groups=2",
        ),
    },
}

REGISTERED = (FastConv2d, FastLinear)


def _params():
    for op in OPERATORS:
        for case, by_kind in CASES.items():
            for kind, spec in by_kind.items():
                if kind in op.kinds:
                    yield pytest.param(op, kind, spec, id=f"{op.name}-{case}-{kind}")


def _left_dense_messages(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, LayersLeftDenseWarning)]


@pytest.mark.parametrize(("op", "kind", "spec"), list(_params()))
def test_rule_case(op: Operator, kind: str, spec):
    """The probe layer is replaced or left as it is (and warned about) as the rule says; outputs unchanged."""
    build, replaced, reason = spec
    replaced = replaced[op.name] if isinstance(replaced, dict) else replaced
    torch.manual_seed(0)
    host = build()
    model = host.model.to(F64).eval()
    x = host.inputs.to(F64)
    with torch.no_grad():
        expected = model(x)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with REPLACEABLE_SUBCLASSES.scratch():
            for cls in REGISTERED:
                REPLACEABLE_SUBCLASSES.register(f"{cls.__module__}.{cls.__qualname__}", cls)
            result = op.apply(model).eval()
    probe = result.get_submodule(host.probe)
    original = model.get_submodule(host.probe)
    messages = _left_dense_messages(caught)
    if replaced:
        assert not isinstance(probe, DENSE), f"{host.probe} should have been replaced"
        assert not messages
    else:
        assert type(probe) is type(original), f"{host.probe} should have been left as it is"
        assert len(messages) == 1, messages
        assert f"layer {host.probe!r} ({type(original).__qualname__})" in messages[0]
        assert reason in messages[0]
    with torch.no_grad():
        torch.testing.assert_close(result(x), expected, rtol=1e-9, atol=1e-9)


def _own_forward_probe(kind: str) -> Host:
    return CASES["own_forward"][kind][0]()


@pytest.mark.parametrize("op", [op for op in OPERATORS if op.explicit], ids=lambda op: op.name)
def test_explicit_layer_that_fails_the_rule_is_refused(op: Operator):
    """A layer named in layers= that the rule refuses raises, naming its path, type, reason and remedy."""
    host = _own_forward_probe("conv" if "conv" in op.kinds else "linear")
    with pytest.raises(UnsupportedModelError) as error:
        op.apply(host.model, layers=[host.probe])
    message = str(error.value)
    assert f"'{host.probe}'" in message and type(host.model[1]).__qualname__ in message
    assert "own forward" in message and "register_replaceable_subclass" in message


@pytest.mark.parametrize("op", OPERATORS, ids=lambda op: op.name)
def test_nothing_to_replace_is_refused(op: Operator):
    """A model whose every layer of the family fails the rule is refused, each layer listed with why."""
    kind = "conv" if "conv" in op.kinds else "linear"
    probe = ReluConv2d(3, 4, 3) if kind == "conv" else ReluLinear(6, 4)
    with pytest.raises(UnsupportedModelError, match=r"nothing to replace.*'0' \(Relu\w+\).*own forward"):
        op.apply(nn.Sequential(probe))


@pytest.mark.parametrize("op", OPERATORS, ids=lambda op: op.name)
def test_model_that_is_itself_a_layer_is_refused(op: Operator):
    kind = "conv" if "conv" in op.kinds else "linear"
    layer = nn.Conv2d(3, 4, 3) if kind == "conv" else nn.Linear(6, 4)
    with pytest.raises(UnsupportedModelError, match="the model itself"):
        op.apply(layer)


@pytest.mark.parametrize("op", [op for op in OPERATORS if not op.explicit], ids=lambda op: op.name)
def test_lowrank_skip_silences_the_warning(op: Operator):
    """convert_to_lowrank has no explicit list: a layer the rule refuses is kept quietly if skip names it."""
    host = _own_forward_probe("conv")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = op.apply(host.model, skip=(host.probe,))
    assert not _left_dense_messages(caught)
    assert type(result.get_submodule(host.probe)) is ReluConv2d


def test_warning_is_re_exported():
    assert compress.LayersLeftDenseWarning is lowrank.LayersLeftDenseWarning is LayersLeftDenseWarning
    assert issubclass(LayersLeftDenseWarning, UserWarning)


@pytest.mark.parametrize(
    "make",
    [
        lambda conv: svd_decompose(nn.Sequential(conv), 0.5)[0],
        lambda conv: tucker_decompose(nn.Sequential(conv), 0.5)[0],
        lambda conv: lowrank_layer(conv, "tucker"),
        lambda conv: lowrank_layer(conv, "matrix"),
    ],
    ids=["SVDConv2d", "TuckerConv2d", "TuckerFactorizedConv2d", "MatrixFactorizedConv2d"],
)
def test_factorized_convs_read_like_the_conv_they_replace(make):
    """The attributes of nn.Conv2d, and a read-only weight that is the reconstructed kernel (no parameter)."""
    conv = nn.Conv2d(6, 8, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2))
    layer = make(conv)
    for name in ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups"):
        assert getattr(layer, name) == getattr(conv, name), name
    assert layer.padding_mode == conv.padding_mode
    assert layer.weight.shape == conv.weight.shape and layer.weight.dtype == conv.weight.dtype
    x = torch.randn(2, 6, 9, 9)
    torch.testing.assert_close(
        layer(x), F.conv2d(x, layer.weight, layer.bias, conv.stride, conv.padding, conv.dilation)
    )
    assert "weight" not in dict(layer.named_parameters()) and "weight" not in layer.state_dict()
    with pytest.raises((AttributeError, KeyError)):
        layer.weight = nn.Parameter(torch.zeros_like(conv.weight))


def lowrank_layer(conv: nn.Conv2d, kind: str) -> nn.Module:
    model = nn.Sequential(conv)
    convert_to_lowrank(model, conv=kind, keep_first_conv_dense=False, init="from_weights", rank_fraction=0.5)
    return model[0]


@pytest.mark.parametrize(
    "make",
    [
        lambda linear: svd_decompose(nn.Sequential(linear), 0.5, include_linear=True)[0],
        lambda linear: to_sparse_linear(nn.Sequential(linear))[0],
        lambda linear: lowrank_layer_linear(linear),
    ],
    ids=["LowRankLinear", "SparseLinear", "MatrixFactorizedLinear"],
)
def test_factorized_linears_read_like_the_linear_they_replace(make):
    linear = nn.Linear(6, 5)
    layer = make(linear)
    assert (layer.in_features, layer.out_features) == (6, 5)
    x = torch.randn(3, 6)
    torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias))
    assert "weight" not in dict(layer.named_parameters()) and "weight" not in layer.state_dict()


def lowrank_layer_linear(linear: nn.Linear) -> nn.Module:
    model = nn.Sequential(linear)
    convert_to_lowrank(model, keep_last_linear_dense=False, init="from_weights", rank_fraction=0.5)
    return model[0]


@pytest.mark.parametrize("op", [op for op in OPERATORS if "linear" in op.kinds], ids=lambda op: op.name)
def test_hugging_face_conv1d_is_named_as_a_linear_left_dense(op: Operator):
    """GPT-2's Conv1D (a transposed linear) is not replaced, and the warning names it like a linear."""
    conv1d = pytest.importorskip("transformers.pytorch_utils").Conv1D
    model = nn.Sequential(nn.Linear(6, 4), conv1d(4, 4))
    with pytest.warns(LayersLeftDenseWarning, match=r"layer '1' \(Conv1D\)"):
        result = op.apply(model)
    assert type(result[1]) is conv1d


def test_the_layer_inside_a_compile_wrapper_is_not_replaced():
    """torch.compile keeps calling the module it compiled: replacing its _orig_mod would change nothing."""
    compiled = torch.compile(nn.Linear(16, 16), backend="eager")
    with pytest.raises(UnsupportedModelError, match=r"'_orig_mod'.*inside the OptimizedModule"):
        svd_decompose(compiled, 0.5, include_linear=True)


def test_a_layer_named_twice_is_refused():
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    with pytest.raises(ValueError, match=r"'0' twice"):
        svd_decompose(model, 0.5, layers=["0", "0"])

"""Config objects of low-rank training: TDLRTConfig, ConversionConfig and the layers' RankConfig.

Each is frozen and validated (errors name the field); a config and the same options as keywords build the same
integrator, conversion or layer; unknown options are refused naming them.
"""

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from slimtrain.layers import (
    MatrixFactorizedConv2d,
    MatrixFactorizedLinear,
    RankConfig,
    TuckerFactorizedConv2d,
)
from slimtrain.lowrank import TDLRT, ConversionConfig, TDLRTConfig, convert_to_lowrank, factorized_layers
from slimtrain.train.config import recipe_from_dict
from slimtrain.train.method import get_method_class

F64 = torch.float64


def _net() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(2, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Conv2d(6, 8, 3, stride=2, padding=1, bias=False),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 3 * 3, 12),
        nn.ReLU(),
        nn.Linear(12, 3),
    ).to(F64)


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


# ------------------------------------------------------------------------------------------------ TDLRT
def _batch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(16, 2, 6, 6, generator=gen, dtype=F64), torch.randint(0, 3, (16,), generator=gen)


def _train(make_integrator, steps: int = 4) -> tuple[TDLRT, dict, dict]:
    """Same seed, same model, ``steps`` integrator steps; returns the integrator, ranks and weights."""
    torch.manual_seed(0)
    model = _net()
    convert_to_lowrank(model, init="from_weights")
    integrator = make_integrator(model, lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9))
    for step in range(steps):
        x, y = _batch(step)

        def closure(x=x, y=y):
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            return loss

        integrator.step(closure)
    return integrator, integrator.ranks(), _state(model)


@pytest.mark.parametrize(
    "options",
    [
        {"tau": 0.4},
        {"tau": 0.3, "variant": "parallel", "aug_select": "qr_columns", "parallel_pinv_rtol": 1e-6},
        {"tau": 0.3, "variant": "local", "local_steps": 2, "state_transport": "reset", "max_grad_norm": 1.0},
        {"tau": 0.05, "absolute_tolerance": True, "truncation": "dlrt_net", "aug_cap": "n"},
        {"tau": 0.5, "rank_policy": "fixed", "update_bn_in_basis_pass": True, "state_transport": "none"},
    ],
)
def test_tdlrt_config_and_keywords_train_identically(options):
    """A TDLRTConfig, the same options as keywords, and another config overridden by them: same ranks and
    the same weights, bit for bit, after four steps from the same seed.
    """
    config = TDLRTConfig(**options)
    by_config, ranks, state = _train(lambda m, f: TDLRT(m, f, config))
    by_keywords, ranks_kw, state_kw = _train(lambda m, f: TDLRT(m, f, **options))
    other = TDLRTConfig(tau=0.9, variant="local", local_steps=7, max_grad_norm=3.0)
    overridden, ranks_ov, state_ov = _train(lambda m, f: TDLRT(m, f, other, **dataclasses.asdict(config)))
    assert by_config.config == by_keywords.config == overridden.config == config
    assert by_config.tau == config.tau and by_config.variant == config.variant
    assert ranks == ranks_kw == ranks_ov
    _assert_same_state(state, state_kw)
    _assert_same_state(state, state_ov)
    _, default_ranks, default_state = _train(lambda m, f: TDLRT(m, f))
    assert default_ranks != ranks or any(not torch.equal(default_state[k], state[k]) for k in state)


def test_grad_reducer_is_an_argument_beside_the_config():
    """The reducer (a callable tied to a process group) is a TDLRT keyword, not a config field."""
    assert "grad_reducer" not in {f.name for f in dataclasses.fields(TDLRTConfig)}
    calls = []
    integrator, _, _ = _train(
        lambda m, f: TDLRT(m, f, TDLRTConfig(tau=0.2), grad_reducer=lambda grads: calls.append(len(grads))),
        steps=1,
    )
    assert integrator.grad_reducer is not None and len(calls) == 2
    with pytest.raises(TypeError, match="grad_reducer"):
        TDLRTConfig(grad_reducer=print)
    with pytest.raises(TypeError, match="grad_reducer must be callable"):
        _train(lambda m, f: TDLRT(m, f, grad_reducer="all_reduce"), steps=0)


def test_tdlrt_unknown_option_is_refused_naming_it():
    """A misspelt option is a TypeError naming it and listing TDLRTConfig's fields; so is a wrong config."""
    with pytest.raises(
        TypeError, match=r"'tua'.*fields of TDLRTConfig: tau, absolute_tolerance, rank_policy"
    ):
        _train(lambda m, f: TDLRT(m, f, tua=0.1), steps=0)
    with pytest.raises(TypeError, match="'tua'"):
        _train(lambda m, f: TDLRT(m, f, TDLRTConfig(), tua=0.1), steps=0)
    with pytest.raises(TypeError, match="config must be a TDLRTConfig"):
        _train(lambda m, f: TDLRT(m, f, {"tau": 0.1}), steps=0)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("tau", -0.1),
        ("tau", math.nan),
        ("tau", math.inf),
        ("tau", "0.1"),
        ("absolute_tolerance", "yes"),
        ("rank_policy", "dynamic"),
        ("variant", "three_pass"),
        ("local_steps", 1),
        ("local_steps", 2.0),
        ("local_steps", True),
        ("aug_cap", "m"),
        ("aug_select", "qr"),
        ("truncation", "svd"),
        ("state_transport", "move"),
        ("max_grad_norm", 0.0),
        ("max_grad_norm", -1.0),
        ("update_bn_in_basis_pass", 1),
        ("parallel_pinv_rtol", -1e-3),
    ],
)
def test_tdlrt_invalid_values_are_refused_naming_the_field(field, value):
    """An invalid value raises ValueError naming the field: at construction, in replace, as a keyword."""
    pattern = rf"TDLRTConfig\.{field}="
    with pytest.raises(ValueError, match=pattern):
        TDLRTConfig(**{field: value})
    with pytest.raises(ValueError, match=pattern):
        dataclasses.replace(TDLRTConfig(), **{field: value})
    with pytest.raises(ValueError, match=pattern):
        _train(lambda m, f: TDLRT(m, f, **{field: value}), steps=0)


def test_tdlrt_config_is_frozen_and_round_trips_through_asdict():
    """The config cannot change in place; asdict lists every field in order; rebuilding gives an equal one."""
    config = TDLRTConfig(tau=0.2, variant="local", local_steps=4, max_grad_norm=1.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.tau = 0.3  # type: ignore[misc]
    plain = dataclasses.asdict(config)
    assert list(plain) == [f.name for f in dataclasses.fields(TDLRTConfig)]
    assert TDLRTConfig(**plain) == config and hash(TDLRTConfig(**plain)) == hash(config)
    assert TDLRTConfig(**dataclasses.asdict(TDLRTConfig())) == TDLRTConfig()


# ------------------------------------------------------------------------------------------- conversion
def _converted(*args, **kwargs) -> tuple[dict, dict[str, str]]:
    """Convert a fresh model from seed 0; returns its state and the new layers' types by name."""
    torch.manual_seed(0)
    model = _net()
    replaced = convert_to_lowrank(model, *args, **kwargs)
    return _state(model), {name: type(layer).__name__ for name, layer in replaced.items()}


@pytest.mark.parametrize(
    ("conversion", "rank"),
    [
        ({}, {}),
        ({"conv": "matrix", "skip": ("8",)}, {"rank_fraction": 0.5, "max_rank": 3}),
        (
            {"init": "from_weights", "tau": 0.5, "tucker_min_rank": 1, "matrix_min_rank": 1},
            {"max_rank_fraction": 1.0, "adaptive_modes": (0, 1, 2, 3)},
        ),
        ({"linear": None, "keep_first_conv_dense": False}, {"ranks": 1, "free_factors": True}),
        ({"conv": None, "keep_last_linear_dense": False}, {"ranks": (2, 2), "max_rank_fraction": 1.0}),
    ],
)
def test_conversion_config_and_keywords_give_the_same_model(conversion, rank):
    """A ConversionConfig (with its RankConfig), the same options as flat keywords, another config overridden
    by keywords (flat, or asdict's nested rank dict): the same layers and the same state_dict.
    """
    config = ConversionConfig(**conversion, rank=RankConfig(**rank))
    expected, layers = _converted(config)
    assert layers
    other = ConversionConfig(
        conv="matrix",
        linear=None,
        skip=("5",),
        init="from_weights",
        tau=0.9,
        rank=RankConfig(ranks=1, max_rank=1, adaptive_modes=(0,)),
        tucker_min_rank=2,
        matrix_min_rank=5,
    )
    plain = dataclasses.asdict(config)
    flat = {**{k: v for k, v in plain.items() if k != "rank"}, **plain["rank"]}
    del flat["min_rank"]
    for state, names in (
        _converted(**conversion, **rank),
        _converted(config=config),
        _converted(**conversion, rank=RankConfig(**rank)),
        _converted(other, **flat),
        _converted(other, **plain),
        _converted(ConversionConfig(**plain)),
    ):
        assert names == layers
        _assert_same_state(state, expected)


def test_conversion_keywords_replace_the_fields_of_the_configs_rank():
    """Rank keywords replace the fields of ``config.rank`` and keep the others."""
    torch.manual_seed(0)
    model = _net()
    config = ConversionConfig(rank=RankConfig(max_rank_fraction=1.0, ranks=2), linear=None)
    replaced = convert_to_lowrank(model, config, ranks=3)
    assert {layer.ranks for layer in replaced.values()} == {(3, 3, 3, 3)}
    assert {layer.max_ranks[:2] for layer in replaced.values()} == {(8, 6), (8, 8)}


def test_conversion_unknown_options_are_refused_naming_them():
    """Unknown keywords (min_rank included: it is per kind here) name themselves and the valid ones."""
    pattern = (
        r"'rank_fractoin'.*fields of ConversionConfig: conv, linear, skip.*RankConfig: ranks, rank_fraction"
    )
    with pytest.raises(TypeError, match=pattern):
        convert_to_lowrank(_net(), rank_fractoin=0.3)
    with pytest.raises(TypeError, match=r"'min_rank'.*tucker_min_rank, matrix_min_rank"):
        convert_to_lowrank(_net(), ConversionConfig(), min_rank=2)
    with pytest.raises(TypeError, match="give one or the other"):
        convert_to_lowrank(_net(), rank=RankConfig(), ranks=2)
    with pytest.raises(TypeError, match="config must be a ConversionConfig"):
        convert_to_lowrank(_net(), {"conv": "matrix"})
    with pytest.raises(TypeError, match="'rnaks'"):
        ConversionConfig(rank={"rnaks": 2})


@pytest.mark.parametrize(
    ("field", "options"),
    [
        ("conv", {"conv": "cp"}),
        ("linear", {"linear": "tucker"}),
        ("skip", {"skip": "8"}),
        ("skip", {"skip": (8,)}),
        ("skip", {"skip": 8}),
        ("keep_first_conv_dense", {"keep_first_conv_dense": "no"}),
        ("keep_last_linear_dense", {"keep_last_linear_dense": 0}),
        ("init", {"init": "zeros"}),
        ("tau", {"tau": -0.5}),
        ("tau", {"tau": math.nan}),
        ("rank", {"rank": 3}),
        ("rank", {"rank": RankConfig(min_rank=2)}),
        ("tucker_min_rank", {"tucker_min_rank": 0}),
        ("matrix_min_rank", {"matrix_min_rank": 1.5}),
    ],
)
def test_conversion_invalid_values_are_refused_naming_the_field(field, options):
    """An invalid value raises ValueError naming the field: at construction, in replace, as a keyword."""
    pattern = rf"ConversionConfig\.{field}="
    with pytest.raises(ValueError, match=pattern):
        ConversionConfig(**options)
    with pytest.raises(ValueError, match=pattern):
        dataclasses.replace(ConversionConfig(), **options)
    with pytest.raises(ValueError, match=pattern):
        convert_to_lowrank(_net(), **options)


def test_conversion_rank_keywords_are_validated_by_rank_config():
    """A rank option given flat is checked by RankConfig, whose field the error names."""
    with pytest.raises(ValueError, match=r"RankConfig\.max_rank_fraction="):
        convert_to_lowrank(_net(), max_rank_fraction=0.0)
    with pytest.raises(ValueError, match=r"RankConfig\.adaptive_modes="):
        convert_to_lowrank(_net(), adaptive_modes="01")


def test_conversion_config_is_frozen_and_round_trips_through_asdict():
    """Frozen; asdict nests the RankConfig as a dict, which the constructor turns back into one."""
    config = ConversionConfig(
        conv="matrix", skip=["a", "b"], tau=0.2, rank=RankConfig(max_rank=4, adaptive_modes=[1, 0])
    )
    assert config.skip == ("a", "b") and config.rank.adaptive_modes == (0, 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.conv = "tucker"  # type: ignore[misc]
    plain = dataclasses.asdict(config)
    assert list(plain) == [f.name for f in dataclasses.fields(ConversionConfig)]
    assert plain["rank"] == dataclasses.asdict(config.rank)
    assert ConversionConfig(**plain) == config and hash(ConversionConfig(**plain)) == hash(config)
    assert ConversionConfig(**dataclasses.asdict(ConversionConfig())) == ConversionConfig()
    assert config.rank_config_for("tucker") == RankConfig(max_rank=4, min_rank=3)
    tucker = ConversionConfig(rank=RankConfig(adaptive_modes=(0, 1, 2, 3)), matrix_min_rank=1)
    assert tucker.rank_config_for("matrix") == RankConfig(min_rank=1)


# ----------------------------------------------------------------------------------------------- layers
LAYERS = [
    (TuckerFactorizedConv2d, (6, 8, 3), {"padding": 1}),
    (MatrixFactorizedConv2d, (6, 8, 3), {"stride": 2}),
    (MatrixFactorizedLinear, (12, 10), {}),
]
RANK_OPTIONS = {
    TuckerFactorizedConv2d: {"ranks": (2, 3, 2, 3), "adaptive_modes": (0, 1, 2, 3), "min_rank": 1},
    MatrixFactorizedConv2d: {"rank_fraction": 0.5, "max_rank": 3, "max_rank_fraction": 1.0},
    MatrixFactorizedLinear: {"ranks": 3, "min_rank": 3, "free_factors": True},
}


def _built(factory) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    layer = factory()
    return layer, _state(layer)


@pytest.mark.parametrize(("cls", "geometry", "extra"), LAYERS)
def test_layer_config_and_keywords_build_the_same_layer(cls, geometry, extra):
    """``config=RankConfig(...)``, the same fields as keywords, another config overridden by them: the same
    ranks, bounds and parameters; the torch.nn-style geometry stays positional.
    """
    options = RANK_OPTIONS[cls]
    config = RankConfig(**options)
    layer, expected = _built(lambda: cls(*geometry, **extra, config=config, dtype=F64))
    other = RankConfig(max_rank=1, min_rank=1, rank_fraction=0.1)
    for make in (
        lambda: cls(*geometry, **extra, **options, dtype=F64),
        lambda: cls(*geometry, **extra, config=other, **dataclasses.asdict(config), dtype=F64),
    ):
        same, state = _built(make)
        assert (same.ranks, same.min_ranks, same.max_ranks) == (layer.ranks, layer.min_ranks, layer.max_ranks)
        assert [u.requires_grad for u in same.factors] == [u.requires_grad for u in layer.factors]
        _assert_same_state(state, expected)
    default, _ = _built(lambda: cls(*geometry, **extra, dtype=F64))
    assert default.ranks != layer.ranks or default.min_ranks != layer.min_ranks


def test_conv_geometry_stays_positional_as_in_nn_conv2d():
    """in, out, kernel, stride, padding, dilation, groups, bias positionally, as in torch.nn.Conv2d."""
    for cls in (TuckerFactorizedConv2d, MatrixFactorizedConv2d):
        layer = cls(4, 6, 3, 2, 1, 1, 1, False, config=RankConfig(max_rank_fraction=1.0, min_rank=1))
        assert (layer.stride, layer.padding, layer.dilation, layer.bias) == ((2, 2), (1, 1), (1, 1), None)
    linear = MatrixFactorizedLinear(5, 4, False, ranks=2)
    assert linear.bias is None and linear.ranks == (2, 2)


@pytest.mark.parametrize(
    ("cls", "source", "convert"),
    [
        (TuckerFactorizedConv2d, nn.Conv2d(6, 8, 3, dtype=F64), TuckerFactorizedConv2d.from_conv),
        (MatrixFactorizedConv2d, nn.Conv2d(6, 8, 3, dtype=F64), MatrixFactorizedConv2d.from_conv),
        (MatrixFactorizedLinear, nn.Linear(12, 10, dtype=F64), MatrixFactorizedLinear.from_linear),
    ],
)
def test_from_dense_layers_take_the_same_config(cls, source, convert):
    """from_conv / from_linear: a RankConfig and the same keywords give the same layer (tau beside them)."""
    options = RANK_OPTIONS[cls]
    config = RankConfig(**options)
    for extra in ({}, {"tau": 0.4}):
        layer = convert(source, config, **extra)
        same = convert(source, **options, **extra)
        assert layer.ranks == same.ranks and layer.min_ranks == same.min_ranks
        _assert_same_state(_state(same), _state(layer))
    with pytest.raises(TypeError, match=rf"{cls.__name__}\.from_\w+\(\) got unknown option\(s\) 'rnaks'"):
        convert(source, rnaks=2)
    with pytest.raises(ValueError, match="tau="):
        convert(source, tau=-1.0)


@pytest.mark.parametrize(("cls", "geometry", "extra"), LAYERS)
def test_layer_unknown_option_is_refused_naming_it(cls, geometry, extra):
    """A misspelt rank option is a TypeError naming it and listing RankConfig's fields."""
    with pytest.raises(
        TypeError, match=rf"{cls.__name__}\(\) got unknown option\(s\) 'rank'.*RankConfig: ranks"
    ):
        cls(*geometry, rank=2)
    with pytest.raises(TypeError, match="config must be a RankConfig"):
        cls(*geometry, config={"ranks": 2})


@pytest.mark.parametrize("cls", [MatrixFactorizedLinear, MatrixFactorizedConv2d])
def test_matrix_layers_adapt_both_modes(cls):
    """adaptive_modes other than (0, 1) does not apply to a matrix layer: ValueError naming the field."""
    geometry = (6, 4, 3) if cls is MatrixFactorizedConv2d else (6, 4)
    assert cls(*geometry, adaptive_modes=[1, 0]).adaptive_modes == (0, 1)
    with pytest.raises(ValueError, match=r"RankConfig\.adaptive_modes=\(0, 1, 2, 3\)"):
        cls(*geometry, config=RankConfig(adaptive_modes=(0, 1, 2, 3)))


def test_min_rank_default_is_the_layers():
    """min_rank=None means the layer's default: 3 for Tucker convolutions, 2 for matrix layers."""
    config = RankConfig(max_rank_fraction=1.0)
    assert TuckerFactorizedConv2d(8, 8, 3, config=config).min_ranks == (3, 3, 3, 3)
    assert MatrixFactorizedLinear(8, 8, config=config).min_ranks == (2, 2)
    assert MatrixFactorizedConv2d(8, 8, 3, config=config, min_rank=1).min_ranks == (1, 1)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("ranks", 0),
        ("ranks", (2, 0)),
        ("ranks", ()),
        ("ranks", "2"),
        ("ranks", 2.5),
        ("ranks", True),
        ("rank_fraction", 0.0),
        ("rank_fraction", 1.5),
        ("rank_fraction", True),
        ("adaptive_modes", (-1,)),
        ("adaptive_modes", "01"),
        ("adaptive_modes", (0.5,)),
        ("max_rank", 0),
        ("max_rank", 1.5),
        ("max_rank_fraction", 0.0),
        ("max_rank_fraction", 1.5),
        ("max_rank_fraction", math.nan),
        ("min_rank", 0),
        ("free_factors", 1),
    ],
)
def test_rank_config_invalid_values_are_refused_naming_the_field(field, value):
    """An invalid value raises ValueError naming the field: at construction, in replace, as a layer option."""
    pattern = rf"RankConfig\.{field}="
    with pytest.raises(ValueError, match=pattern):
        RankConfig(**{field: value})
    with pytest.raises(ValueError, match=pattern):
        dataclasses.replace(RankConfig(), **{field: value})
    with pytest.raises(ValueError, match=pattern):
        TuckerFactorizedConv2d(4, 4, 3, **{field: value})


def test_rank_config_is_frozen_normalized_and_round_trips_through_asdict():
    """Frozen, hashable; sequences become tuples of ints (adaptive modes sorted); asdict rebuilds it."""
    config = RankConfig(ranks=[2, 3, 3, 3], adaptive_modes=[3, 0, 1, 2, 1], max_rank=5, free_factors=True)
    assert config.ranks == (2, 3, 3, 3) and config.adaptive_modes == (0, 1, 2, 3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.ranks = 2  # type: ignore[misc]
    plain = dataclasses.asdict(config)
    assert list(plain) == [f.name for f in dataclasses.fields(RankConfig)]
    assert RankConfig(**plain) == config and hash(RankConfig(**plain)) == hash(config)
    assert RankConfig(**dataclasses.asdict(RankConfig())) == RankConfig()


# ------------------------------------------------------------------------------------------ the plugins
def _method(name: str, options: dict):
    tree = {
        "name": "c",
        "data": {"name": "digits"},
        "model": {"name": "mlp", "kwargs": {"widths": [32, 32]}},
        "method": {"name": name, "options": options},
        "optimizer": {"lr": 0.05, "momentum": 0.9},
    }
    cls = get_method_class(name)
    return cls(cls.Options.model_validate(options), recipe_from_dict(tree))


def test_engine_plugins_build_the_configs_from_their_options():
    """The tdlrt plugin passes its integrator options as one TDLRTConfig and converts as the equivalent
    keywords would; fixed-rank converts to free factors at its rank fraction.
    """
    options = {"tau": 0.3, "variant": "local", "local_steps": 3, "max_rank_fraction": 1.0, "skip": ["2"]}
    method = _method("tdlrt", options)
    torch.manual_seed(0)
    model = method.prepare(_net())
    torch.manual_seed(0)
    reference = _net()
    convert_to_lowrank(reference, skip=("2",), max_rank_fraction=1.0)
    _assert_same_state(_state(model), _state(reference))
    method.build_optimizer(model)
    assert method.integrator.config == TDLRTConfig(tau=0.3, variant="local", local_steps=3)

    fixed = _method("fixed-rank", {"rank_fraction": 0.5, "adaptive_modes": [0, 1, 2, 3]})
    layers = factorized_layers(fixed.prepare(_net()))
    assert layers and all(layer.free_factors for layer in layers.values())
    assert layers["3"].adaptive_modes == (0, 1, 2, 3) and layers["8"].adaptive_modes == (0, 1)

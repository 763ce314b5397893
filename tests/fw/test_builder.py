"""Radius estimation and per-model constraint building (spec sfw.md §2.4, §2.5, §5, §7.7)."""

import dataclasses
import math

import pytest
import torch
from torch import nn

from slimtrain.fw import (
    ConstraintsConfig,
    GroupKSupportNormBall,
    KSparsePolytope,
    KSupportNormBall,
    LpBall,
    NuclearNormBall,
    SpectralKSupportNormBall,
    build_constraints,
    estimate_init_norms,
    local_init_norms,
    miao_k,
    resolve_k,
)


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 16, 3)  # 1152 weights, fan_in 72
        self.bn = nn.BatchNorm2d(16)
        self.fc = nn.Linear(64, 16)  # 1024 weights, fan_in 64; bias of shape (16,) like the BN vectors

    def forward(self, x):
        return self.fc(self.bn(self.conv(x)).mean((2, 3)).repeat(1, 4))


def _by_name(groups):
    return {n: c for g in groups for n, c in zip(g["names"], g["constraint"], strict=True)}


def test_radius_is_tau_times_the_monte_carlo_mean_and_matches_kaiming_uniform():
    """Radius = τ·E‖θ‖; kaiming-uniform(a=√5) weights have E‖W‖ ≈ sqrt(n/(3·fan_in)) ±2% (n ≥ 1000)."""
    net = _Net()
    norms = estimate_init_norms(net, n_draws=100)
    sets = _by_name(build_constraints(net, k=0.1, tau=7.0, n_draws=100))
    for name, fan_in in (("conv.weight", 72), ("fc.weight", 64)):
        n = net.get_parameter(name).numel()
        assert norms[name] == pytest.approx(math.sqrt(n / (3 * fan_in)), rel=0.02)
        assert sets[name].radius == pytest.approx(7.0 * norms[name], rel=1e-12)


def test_estimation_leaves_the_model_and_the_global_rng_alone():
    """The model's values and the global RNG state survive the estimate (a copy in a forked RNG)."""
    net = _Net()
    with torch.no_grad():
        net.conv.weight.fill_(0.25)  # a custom init that must survive
    before = {k: v.clone() for k, v in net.state_dict().items()}
    rng = torch.get_rng_state()
    estimate_init_norms(net, n_draws=5)
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_estimate_is_deterministic_given_the_seed():
    """The same seed gives identical norms (so every DDP rank builds the same sets)."""
    assert estimate_init_norms(_Net(), n_draws=3, seed=4) == estimate_init_norms(_Net(), n_draws=3, seed=4)


def test_zero_means_become_one_locally_and_by_shape_reproduces_the_reference():
    """Local: BN β and zero biases get norm 1.0, BN γ √C; by_shape: same-shape tensors share the last."""
    net = _Net()
    norms = estimate_init_norms(net, n_draws=2)
    per_tensor = local_init_norms(net, norms)
    assert per_tensor["bn.bias"] == 1.0 and per_tensor["bn.weight"] == pytest.approx(4.0)
    by_shape = local_init_norms(net, norms, "by_shape")
    # fc.bias (16,) is written last among the (16,)-shaped tensors: conv.bias, bn.weight, bn.bias share it.
    for name in ("conv.bias", "bn.weight", "bn.bias"):
        assert by_shape[name] == per_tensor["fc.bias"]


def test_by_shape_gives_bn_radius_tau_when_bn_beta_is_last():
    """In the reference's shape-keyed lookup, BN γ ends up with radius τ·1 (β's replaced zero)."""
    net = nn.Sequential(nn.Linear(3, 5, bias=False), nn.BatchNorm1d(5))
    sets = _by_name(build_constraints(net, tau=3.0, n_draws=2, radius_lookup="by_shape"))
    assert sets["1.weight"].radius == pytest.approx(3.0)
    sets = _by_name(build_constraints(net, tau=3.0, n_draws=2))
    assert sets["1.weight"].radius == pytest.approx(3.0 * math.sqrt(5))


def test_modes_put_the_right_set_on_every_tensor():
    """Unstructured: the set everywhere; filter: group set on convs, else L2; lowrank: spectral on convs."""
    net = _Net()
    kinds = {
        mode: {
            n: type(c) for n, c in _by_name(build_constraints(net, mode, constraint=cn, radius=1.0)).items()
        }
        for mode, cn in (("unstructured", "k_sparse"), ("filter", None), ("lowrank", "nuclear"))
    }
    assert set(kinds["unstructured"].values()) == {KSparsePolytope}
    assert kinds["filter"].pop("conv.weight") is GroupKSupportNormBall
    assert kinds["lowrank"].pop("conv.weight") is NuclearNormBall
    assert set(kinds["filter"].values()) == set(kinds["lowrank"].values()) == {LpBall}
    assert len(kinds["unstructured"]) == len(list(net.parameters()))
    lowrank = _by_name(build_constraints(net, "lowrank", k=0.5, radius=1.0))["conv.weight"]
    assert isinstance(lowrank, SpectralKSupportNormBall) and lowrank.shape == (16, 72) and lowrank.k == 8


def test_k_as_fraction_count_or_rule():
    """A k ≤ 1 is a fraction (at least 1), k > 1 a count (at most n); callables such as miao_k get n."""
    assert resolve_k(0.3, 10) == 3 and resolve_k(0.01, 10) == 1 and resolve_k(1.0, 10) == 10
    assert resolve_k(4, 10) == 4 and resolve_k(40, 10) == 10
    assert miao_k(1000) == 50 and miao_k(30) == 10 and miao_k(4) == 4
    sets = _by_name(build_constraints(_Net(), k=miao_k, radius=1.0))
    assert sets["conv.weight"].k == 57 and sets["bn.bias"].k == 10


def test_radius_and_diameter_modes():
    """radius= sets r directly; diameter= sets D (so r = D/(2√k) for the K-sparse polytope)."""
    net = _Net()
    assert all(c.radius == 2.0 for c in _by_name(build_constraints(net, radius=2.0)).values())
    sets = _by_name(build_constraints(net, constraint="k_sparse", k=4, diameter=8.0))
    assert sets["conv.weight"].radius == pytest.approx(2.0) and sets["conv.weight"].diameter == pytest.approx(
        8.0
    )


def test_global_mode_uses_the_root_sum_of_squares_without_replacing_zeros():
    """Global: one set per family over all its tensors, D = 2τ·sqrt(Σ E‖θ_l‖²), zero means kept at 0."""
    net = _Net()
    norms = estimate_init_norms(net, n_draws=3)
    groups = build_constraints(net, k=0.2, tau=2.0, global_mode=True, n_draws=3)
    assert len(groups) == 1
    c = groups[0]["constraint"]
    assert isinstance(c, KSupportNormBall) and c.numel == sum(p.numel() for p in net.parameters())
    assert c.diameter == pytest.approx(4.0 * math.sqrt(sum(v**2 for v in norms.values())))
    filt = build_constraints(net, "filter", global_mode=True, n_draws=3)
    assert isinstance(filt[0]["constraint"], GroupKSupportNormBall) and filt[0]["names"] == ["conv.weight"]
    assert isinstance(filt[1]["constraint"], LpBall)


def test_bad_arguments_are_rejected():
    """Unknown mode or set, radius with diameter, and global spectral sets raise clear errors."""
    net = _Net()
    with pytest.raises(ValueError, match="unknown mode"):
        build_constraints(net, "channels")
    with pytest.raises(ValueError, match="does not fit mode"):
        build_constraints(net, "filter", constraint="k_support")
    with pytest.raises(ValueError, match="not both"):
        build_constraints(net, radius=1.0, diameter=2.0)
    with pytest.raises(ValueError, match="global mode"):
        build_constraints(net, "lowrank", global_mode=True)


def _describe(groups):
    """The groups as plain data: names and each set's full description (type, shape, k, radius, …)."""
    out = []
    for g in groups:
        sets = g["constraint"] if isinstance(g["constraint"], list) else [g["constraint"]]
        out.append((g["names"], [c.to_config() for c in sets]))
    return out


@pytest.mark.parametrize(
    ("config", "keywords"),
    [
        pytest.param(ConstraintsConfig(), {}, id="defaults"),
        pytest.param(
            ConstraintsConfig(mode="filter", k=0.5, tau=3.0, n_draws=3, seed=2, group_select="kthvalue"),
            {"mode": "filter", "k": 0.5, "tau": 3.0, "n_draws": 3, "seed": 2, "group_select": "kthvalue"},
            id="filter",
        ),
        pytest.param(
            ConstraintsConfig(mode="lowrank", constraint="nuclear", diameter=4.0, spectral_solver="power"),
            {"mode": "lowrank", "constraint": "nuclear", "diameter": 4.0, "spectral_solver": "power"},
            id="lowrank",
        ),
        pytest.param(
            ConstraintsConfig(k=miao_k, global_mode=True, n_draws=2, radius_lookup="by_shape"),
            {"k": miao_k, "global_mode": True, "n_draws": 2, "radius_lookup": "by_shape"},
            id="global-callable-k",
        ),
        pytest.param(
            ConstraintsConfig(constraint="lp_ball", p=math.inf, radius=2.0),
            {"constraint": "lp_ball", "p": math.inf, "radius": 2.0},
            id="lp-ball",
        ),
    ],
)
def test_config_object_and_keywords_build_the_same_groups(config, keywords):
    """A config, the same options as keywords, a positional mode, or another config overridden by keywords.

    All four give identical param groups (same tensors, same sets, same radii).
    """
    net = _Net()
    expected = _describe(build_constraints(net, config))
    assert _describe(build_constraints(net, **keywords)) == expected
    assert _describe(build_constraints(net, config=config)) == expected
    mode = keywords.pop("mode", "unstructured")
    assert _describe(build_constraints(net, mode, **keywords)) == expected
    # Options replace the config's fields: start from another config and override every field.
    other = ConstraintsConfig(tau=99.0, n_draws=1, seed=7)
    assert _describe(build_constraints(net, other, **dataclasses.asdict(config))) == expected


def test_unknown_option_is_refused_naming_it_and_the_valid_ones():
    """A misspelt option is a TypeError naming it and listing the fields; the mode cannot come twice."""
    with pytest.raises(TypeError, match=r"'raduis'.*fields of ConstraintsConfig: mode, constraint, k, tau"):
        build_constraints(_Net(), raduis=1.0)
    with pytest.raises(TypeError, match="'raduis'"):
        build_constraints(_Net(), ConstraintsConfig(), raduis=1.0)
    with pytest.raises(TypeError, match="mode twice"):
        build_constraints(_Net(), "filter", mode="lowrank")
    with pytest.raises(TypeError, match="config must be a ConstraintsConfig"):
        build_constraints(_Net(), {"mode": "filter"})


@pytest.mark.parametrize(
    ("field", "options"),
    [
        ("mode", {"mode": "channels"}),
        ("constraint", {"mode": "filter", "constraint": "k_support"}),
        ("constraint", {"constraint": "nuclear"}),
        ("k", {"k": 0}),
        ("k", {"k": -0.5}),
        ("k", {"k": True}),
        ("k", {"k": "0.3"}),
        ("tau", {"tau": 0.0}),
        ("tau", {"tau": math.nan}),
        ("radius", {"radius": -1.0}),
        ("diameter", {"diameter": math.inf}),
        ("p", {"p": 0.5}),
        ("global_mode", {"global_mode": "yes"}),
        ("global_mode", {"mode": "lowrank", "global_mode": True}),
        ("n_draws", {"n_draws": 0}),
        ("n_draws", {"n_draws": 2.0}),
        ("seed", {"seed": 0.5}),
        ("radius_lookup", {"radius_lookup": "by_name"}),
        ("spectral_solver", {"spectral_solver": "lanczos"}),
        ("group_select", {"group_select": "quantile"}),
    ],
)
def test_invalid_field_values_are_refused_naming_the_field(field, options):
    """An invalid value raises ValueError naming the field: at construction, in replace, as a keyword."""
    pattern = rf"ConstraintsConfig\.{field}="
    with pytest.raises(ValueError, match=pattern):
        ConstraintsConfig(**options)
    with pytest.raises(ValueError, match=pattern):
        dataclasses.replace(ConstraintsConfig(), **options)
    with pytest.raises(ValueError, match=pattern):
        build_constraints(_Net(), **options)


def test_radius_and_diameter_together_name_both_fields():
    """The radius and the diameter are alternatives; giving both names both fields."""
    with pytest.raises(ValueError, match=r"ConstraintsConfig\.radius=1.0, ConstraintsConfig\.diameter=2.0"):
        ConstraintsConfig(radius=1.0, diameter=2.0)


def test_config_is_frozen_and_round_trips_through_asdict():
    """The config cannot change in place; asdict gives every field; rebuilding gives an equal config."""
    config = ConstraintsConfig(mode="filter", k=miao_k, tau=3.0, n_draws=5, group_select="kthvalue")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.tau = 1.0  # type: ignore[misc]
    plain = dataclasses.asdict(config)
    assert list(plain) == [f.name for f in dataclasses.fields(ConstraintsConfig)]
    assert ConstraintsConfig(**plain) == config
    assert ConstraintsConfig(**dataclasses.asdict(ConstraintsConfig())) == ConstraintsConfig()
    assert (
        config.set_name == "group_k_support"
        and ConstraintsConfig(constraint="k_sparse").set_name == "k_sparse"
    )

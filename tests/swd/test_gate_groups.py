"""The default channel model (DepGraph's coupled groups holding a BatchNorm): its gates, its scores and its
parameter count, which is the parameter count of the exported model, on every registered model with
BatchNorms, on Hugging Face CNNs and through the engine's structured methods (issue #22, item 2).
"""

from __future__ import annotations

import math

import pytest
import torch
from tests.conformance.zoo import CASES
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

from slimtrain.compress import (
    UnsupportedChannelFlowError,
    apply_masks,
    channel_masks,
    check_same_outputs,
    coupled_channel_groups,
    to_exported,
)
from slimtrain.errors import BadInputError, UnsupportedModelError
from slimtrain.models import create_model, list_models
from slimtrain.swd import (
    ChannelSelection,
    GroupGates,
    SelectiveWeightDecay,
    budget_threshold,
    parameter_budget,
    prune_to_target,
)
from slimtrain.train.config import recipe_from_dict
from slimtrain.train.trainer import Trainer

# Small widths of the registry's models with BatchNorms; the ResNets in both residual layouts.
SMALL = {
    "resnet18": {"width": 4},
    "vgg16_bn": {"width_multiplier": 0.0625},
    "wrn28": {"widen_factor": 1},
    **{f"resnet{d}": {"width": 4, "shortcut": "B"} for d in (8, 20, 32, 44, 56, 110)},
}
VARIANTS = [
    (name, {**SMALL.get(name, {}), **extra})
    for name in list_models()
    for extra in (({}, {"bn_after_add": True}) if name.startswith("resnet") and name in SMALL else ({},))
]


def _distinct(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _random_gammas(model: nn.Module, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, _BatchNorm) and m.affine:
            with torch.no_grad():
                m.weight.copy_(torch.rand(m.weight.shape, generator=generator) * 2 - 1)  # signs too


def _inputs() -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize(("name", "kwargs"), VARIANTS, ids=[f"{n}-{k}" for n, k in VARIANTS])
def test_registry_models_gate_depgraph_groups_and_export_their_count(name, kwargs):
    """The gates are exactly DepGraph's removable groups holding a BatchNorm (every BatchNorm of these
    CNNs is in one); at targets 500 and 900 the model exported after masking the selected channels has
    exactly the counted parameters, within the budget (or the budget is out of reach and said so), and the
    masks are the slices :func:`channel_masks` removes.
    """
    torch.manual_seed(0)
    model = create_model(name, **kwargs).eval()
    norms = {n for n, m in model.named_modules() if isinstance(m, _BatchNorm) and m.affine}
    x = _inputs()
    if not norms:  # nothing gates its channels: refused at the call, naming the model
        with pytest.raises(UnsupportedModelError, match=type(model).__name__):
            GroupGates.from_model(model, x)
        return
    _random_gammas(model)
    gates = GroupGates.from_model(model, x)
    depgraph = coupled_channel_groups(model, x, root_types=(_ConvNd, nn.Linear))
    assert gates.groups == [g for g in depgraph if any(s.module in norms for s in g.members)]
    assert set(gates.gates) == norms
    for target in (500, 900):
        budget = parameter_budget(model, target)
        try:
            threshold = budget_threshold(gates, model, target)
        except UnsupportedModelError as error:
            assert "smaller target" in str(error)
            assert gates.parameter_count(model, math.inf) > budget
            continue
        count = gates.parameter_count(model, threshold)
        assert count <= budget, target
        removed = gates.removal_masks(model, threshold)
        plan = gates.plan(model, threshold)
        expected = {n: ~k for n, k in channel_masks(model, plan).items()}
        for n in removed.keys() | expected.keys():
            params = model.get_parameter(n)
            none = torch.zeros_like(params, dtype=torch.bool)
            assert torch.equal(removed.get(n, none), expected.get(n, none)), n
        exported = to_exported(apply_masks(model, {n: ~m for n, m in removed.items()}), "native", x)
        assert _distinct(exported) == count, target


def _conv_bn_net() -> nn.Sequential:
    """Conv(3→4, 3×3) 108, BN 8, ReLU, Conv(4→6, 3×3) 216, BN 12, ReLU, pool, Linear(6→10) 70: 414."""
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 6, 3, bias=False),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 10),
    )


def test_count_by_hand_and_every_group_keeps_one_channel():
    """Kept k1 channels of BN 1 and k2 of BN 2: 3·k1·9 + 2·k1 + k1·k2·9 + 2·k2 + 10·k2 + 10 parameters; at
    th = +inf every group keeps its highest-|γ| channel (k1 = k2 = 1).
    """
    model = _conv_bn_net()
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([0.1, -0.9, 0.2, 0.8]))
        model[4].weight.copy_(torch.tensor([0.3, 0.6, -0.7, 0.05, 0.5, 0.4]))
    gates = GroupGates.from_model(model, torch.randn(2, 3, 8, 8))
    assert gates.gates == ["1", "4"]

    def by_hand(k1: int, k2: int) -> int:
        return 3 * k1 * 9 + 2 * k1 + k1 * k2 * 9 + 2 * k2 + 10 * k2 + 10

    assert _distinct(model) == by_hand(4, 6) == gates.parameter_count(model, 0.0)
    assert gates.parameter_count(model, 0.5) == by_hand(2, 3)
    assert gates.parameter_count(model, 0.5, "gt") == by_hand(2, 2)
    assert gates.parameter_count(model, math.inf) == by_hand(1, 1)
    keep = gates.keep_masks(model, math.inf)
    assert keep[0].tolist() == [False, True, False, False] and keep[1].tolist() == [0, 0, 1, 0, 0, 0]


def test_a_channel_scores_the_max_over_its_groups_batchnorms():
    """On the SWD reference layout (a BatchNorm after each addition) a stage's BatchNorms share one group;
    a channel scores max |γ_c| over them: one large γ keeps the channel.
    """
    model = create_model("resnet8", width=4, shortcut="B", bn_after_add=True)
    _random_gammas(model)
    gates = GroupGates.from_model(model, _inputs())
    group = max(gates.groups, key=lambda g: sum(s.module in gates.gates for s in g.members))
    norms = [s for s in group.members if s.module in gates.gates]
    assert len(norms) > 1
    with torch.no_grad():
        model.get_submodule(norms[-1].module).weight[norms[-1].indices[0]] = -7.0
    scores = gates.channel_scores(model)[gates.groups.index(group)]
    assert scores[norms[-1].root_indices[0]] == 7.0
    for c in range(group.size):
        gammas = [
            model.get_submodule(s.module).weight[i].abs()
            for s in norms
            for i, r in zip(s.indices, s.root_indices, strict=True)
            if r == c
        ]
        assert scores[c] == max(gammas)


@pytest.mark.parametrize("bn_after_add", [False, True])
def test_structured_swd_end_to_end_exports_its_count(bn_after_add):
    """SelectiveWeightDecay(ChannelSelection): the penalty reaches γ, β of the selected channels only; the
    final pruning's export has exactly the counted parameters, within the budget, and the same outputs.
    """
    model = create_model("resnet20", width=4, shortcut="B", bn_after_add=bn_after_add)
    _random_gammas(model, seed=3)
    x = _inputs()
    selection = ChannelSelection(model, 700, example_inputs=x)
    swd = SelectiveWeightDecay(selection, weight_decay=5e-4, total_steps=4, a_min=2.0)
    swd.penalty(model).backward()
    selected = {s.name for s in selection.select(model)}
    assert selected == {f"{g}.{p}" for g in selection.graph.gates for p in ("weight", "bias")}
    assert all(p.grad is None for n, p in model.named_parameters() if n not in selected)
    count = selection.graph.parameter_count(model, selection.threshold(model))
    final = ChannelSelection(model, 700, penalize_filters=True, graph=selection.graph)
    prune_to_target(model, final)
    exported = to_exported(model, "filter", x)
    assert _distinct(exported) == count <= parameter_budget(model, 700)
    check_same_outputs(model, exported, x)


@pytest.mark.parametrize("case", ["hf_resnet", "hf_mobilenet_v2"])
def test_hugging_face_cnns_take_structured_swd(case):
    """Hugging Face ResNet and MobileNetV2 (torch.fx cannot trace them) gate channels and export the count."""
    torch.manual_seed(0)
    model, x = CASES[case].build().eval(), CASES[case].inputs()
    _random_gammas(model)
    selection = ChannelSelection(model, 400, penalize_filters=True, example_inputs=x)
    count = selection.graph.parameter_count(model, selection.threshold(model))
    prune_to_target(model, selection)
    exported = to_exported(model, "filter", x)
    assert _distinct(exported) == count <= parameter_budget(model, 400) < CASES[case].params_all
    check_same_outputs(model, exported, x)


def test_zero_padding_shortcuts_are_refused_naming_them():
    """Option-A shortcuts (zero padding): the default channel model refuses them, naming the shortcut."""
    model = create_model("resnet8", width=4, shortcut="A")
    with pytest.raises(UnsupportedChannelFlowError, match=r"layer2\.0\.shortcut.*option A|option A"):
        ChannelSelection(model, 500, example_inputs=_inputs())
    with pytest.raises(UnsupportedChannelFlowError, match=r"'layer2\.0\.shortcut'"):
        ChannelSelection(model, 500, example_inputs=_inputs())


def test_the_default_needs_example_inputs():
    """Without example inputs the default channel model says which argument is missing; without a gating group
    ``GroupGates`` says how to build it.
    """
    model = create_model("resnet8", width=4, shortcut="B")
    with pytest.raises(BadInputError, match="example_inputs"):
        ChannelSelection(model, 500)
    with pytest.raises(BadInputError, match="channel_model"):
        ChannelSelection(model, 500, channel_model="fx")  # type: ignore[arg-type]

    with pytest.raises(BadInputError, match=r"GroupGates\.from_model"):
        GroupGates(model, [])  # built directly with no gating group


STRUCTURED = [
    ("swd-structured", {"target": 0.5, "a_max": 1e3}),
    ("swd-structured", {"target": 0.5, "a_max": 1e3, "penalize_filters": True}),
    ("network-slimming", {"target": 0.5, "prune_at": 0.5}),
    ("magnitude-ft", {"target": 0.5, "granularity": "channels"}),
    ("gmp", {"target": 0.5, "granularity": "channels", "begin": 0.2, "end": 0.7, "frequency": 1}),
]


@pytest.mark.parametrize(("method", "options"), STRUCTURED, ids=[f"{m}-{len(o)}" for m, o in STRUCTURED])
@pytest.mark.parametrize("bn_after_add", [False, True])
def test_structured_methods_export_the_count_they_prune_to(tmp_path, method, options, bn_after_add):
    """Through the engine (example inputs set by the trainer), each structured method's native export has
    the parameter count of its channel model at the kept channels, within ``params_budget``.
    """
    tree = {
        "name": method,
        "data": {"name": "digits", "val_fraction": 0.2},
        "model": {"name": "resnet8", "kwargs": {"width": 4, "shortcut": "B", "bn_after_add": bn_after_add}},
        "method": {"name": method, "options": options},
        "optimizer": {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4},
        "train": {"epochs": 1, "batch_size": 64, "progress": False, "max_steps": 6},
    }
    trainer = Trainer(recipe_from_dict(tree), tmp_path / "run")
    trainer.fit()
    method_object, model = trainer.components.method, trainer.components.model
    gates = getattr(method_object, "channel_model", None) or method_object.channel_graph
    assert isinstance(gates, GroupGates)
    scores = gates.scores(model)
    count = gates.parameter_count(model, float(scores[scores > 0].min()))
    x = method_object.example_inputs
    exported = to_exported(model, "native", x)
    assert _distinct(exported) == count <= method_object.params_budget(model)


class _TiedInGroup(nn.Module):
    """Two convs reading one BatchNorm-gated group and sharing their weight, added together."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.ca = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.cb = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.cb.weight = self.ca.weight
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.stem(x)))
        return self.head(self.ca(h) + self.cb(h))


def test_a_tied_weight_in_a_gating_group_is_refused_naming_it():
    """Removing a channel would untie it, which the export refuses: the count could never be reached."""
    with pytest.raises(UnsupportedModelError, match=r"tied parameter ca\.weight = cb\.weight"):
        GroupGates.from_model(_TiedInGroup(), torch.randn(2, 3, 8, 8))


def test_the_tracers_count_rule_is_refused_with_the_groups():
    model = create_model("resnet8", num_classes=10, in_channels=3, image_size=32, width=4, shortcut="B")
    with pytest.raises(BadInputError, match=r"gate_compare='gt'.*channel_model='reference'"):
        ChannelSelection(model, 500, gate_compare="gt", example_inputs=_inputs())


def test_a_nan_gamma_keeps_every_group_non_empty():
    model = create_model("resnet8", num_classes=10, in_channels=3, image_size=32, width=4, shortcut="B")
    _random_gammas(model)
    with torch.no_grad():
        model.bn1.weight[0] = float("nan")
    gates = GroupGates.from_model(model, _inputs())
    kept = gates.plan(model, 0.99).selections
    assert all(len(s.pruned) < s.group.size for s in kept)


def test_channel_pruning_masks_trace_the_groups_on_example_inputs():
    from slimtrain.methods.masked import pruning_masks

    model = create_model("resnet8", num_classes=10, in_channels=3, image_size=32, width=4, shortcut="B")
    _random_gammas(model)
    masks = pruning_masks(model, "channels", 0.5, example_inputs=_inputs())
    assert any(not bool(m.all()) for m in masks.values())
    with pytest.raises(BadInputError, match="example_inputs"):
        pruning_masks(model, "channels", 0.5)


@pytest.mark.parametrize("method", ["swd-structured", "network-slimming"])
def test_an_unreachable_target_is_refused_before_training(tmp_path, method):
    """What no gate can remove does not depend on γ: the run is refused when it is built, not at pruning."""
    from slimtrain.errors import RunBuildError

    tree = {
        "data": {"name": "digits", "val_fraction": 0.2},
        "model": {"name": "resnet8", "kwargs": {"width": 4, "shortcut": "B"}},
        "method": {"name": method, "options": {"target": 0.995}},
        "train": {"epochs": 1, "batch_size": 64, "progress": False},
    }
    with pytest.raises(RunBuildError, match=r"removing 0\.995 of the parameters.*choose a smaller target"):
        Trainer(recipe_from_dict(tree), tmp_path / "run")

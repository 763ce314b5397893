"""Structured SWD: channel graph, analytic count, budget bisection, gating and filter selection."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from slimtrain.swd import (
    ChannelGraph,
    ChannelSelection,
    SelectiveWeightDecay,
    budget_threshold,
    parameter_budget,
    prune_to_target,
)

from .swd_models import TinyResNet, randomize_bn

BLOCKS = ["layer1.0", "layer1.1", "layer2.0"]
# The graph holds layer names only, so one trace serves every TinyResNet instance.
GRAPH = ChannelGraph.from_model(TinyResNet())


def _model(seed: int = 0) -> TinyResNet:
    model = TinyResNet()
    randomize_bn(model, torch.Generator().manual_seed(seed))
    return model


def _reference_count(model: TinyResNet, th: float, compare: str) -> int:
    """The spec's closed-form count (§2.6): stem, BasicBlocks with optional 1×1 shortcut, classifier."""

    def alive(bn: nn.BatchNorm2d) -> int:
        gamma = bn.weight.detach().abs()
        return int((gamma >= th).sum() if compare == "ge" else (gamma > th).sum())

    c = alive(model.prunablebn1)
    count = 3 * 3 * 3 * c + 2 * c
    f_in = c
    for name in BLOCKS:
        block = model.get_submodule(name)
        b1, b3 = alive(block.prunablebn1), alive(block.prunablebn3)
        count += f_in * b1 * 9 + 2 * b1 + b1 * b3 * 9 + 2 * 2 * b3
        if len(block.shortcut):
            count += f_in * b3 + 2 * b3
        f_in = b3
    return count + f_in * model.linear.out_features + model.linear.out_features


def test_gates_are_the_prunable_batchnorms() -> None:
    """Automatic gates: stem BN, each block's first BN and post-add BN; never the pre-add or shortcut BN."""
    graph = ChannelGraph.from_model(_model())
    expected = ["prunablebn1"] + [f"{b}.prunablebn{i}" for b in BLOCKS for i in (1, 3)]
    assert graph.gates == expected


def test_count_at_zero_is_the_total_parameter_count() -> None:
    """P(0) = N_total."""
    model = _model()
    assert ChannelGraph.from_model(model).parameter_count(model, 0.0) == sum(
        p.numel() for p in model.parameters()
    )


@given(st.floats(0.0, 1.0), st.sampled_from(["ge", "gt"]), st.integers(0, 5))
def test_count_matches_the_closed_form(th: float, compare: str, seed: int) -> None:
    """The traced count equals the spec's closed-form ResNet count for any threshold and comparison."""
    model = _model(seed)
    assert GRAPH.parameter_count(model, th, compare) == _reference_count(model, th, compare)


@given(st.lists(st.floats(0.0, 1.1), min_size=2, max_size=6))
def test_count_is_non_increasing_in_the_threshold(thresholds: list[float]) -> None:
    """P is non-increasing in th."""
    model = _model()
    counts = [GRAPH.parameter_count(model, th) for th in sorted(thresholds)]
    assert counts == sorted(counts, reverse=True)


@given(st.integers(0, 990), st.integers(0, 5))
def test_bisection_returns_the_smallest_value_meeting_the_budget(target: int, seed: int) -> None:
    """Corrected bisection: P(th) ≤ B and P(previous sorted |γ|) > B."""
    model, graph = _model(seed), GRAPH
    budget = parameter_budget(model, target)
    th = budget_threshold(graph, model, target)
    assert graph.parameter_count(model, th) <= budget
    gammas = torch.cat([model.get_submodule(g).weight.detach().abs() for g in graph.gates]).sort()[0]
    below = gammas[gammas < th]
    if len(below):
        assert graph.parameter_count(model, float(below[-1])) > budget


def test_reference_bisection_returns_a_candidate_near_the_budget() -> None:
    """Reference bisection returns a sorted |γ| value whose count lies within one candidate of the budget."""
    model = _model()
    graph = ChannelGraph.from_model(model)
    gammas = torch.cat([model.get_submodule(g).weight.detach().abs() for g in graph.gates]).sort()[0]
    th = budget_threshold(graph, model, 500, bisection="reference", gate_compare="gt")
    index = int(torch.nonzero(gammas == th)[0])
    budget = parameter_budget(model, 500)
    counts = [graph.parameter_count(model, float(gammas[i]), "gt") for i in (index - 1, index, index + 1)]
    assert counts[0] >= budget >= counts[2] or counts[1] == budget


def test_unreachable_budget_is_reported() -> None:
    """A budget below the ungated parameters raises an error naming the target."""
    model = nn.Sequential(nn.Conv2d(3, 2, 1), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(2, 500))
    with pytest.raises(ValueError, match="999"):
        budget_threshold(ChannelGraph.from_model(model), model, 999)


def _bn_outputs(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    outputs = {}
    hooks = [
        m.register_forward_hook(lambda _m, _i, out, n=n: outputs.__setitem__(n, out))
        for n, m in model.named_modules()
        if isinstance(m, nn.BatchNorm2d)
    ]
    model(x)
    for h in hooks:
        h.remove()
    return outputs


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_pruned_gate_channels_output_exactly_zero(mode: str) -> None:
    """After structured pruning, a gated-off channel (γ = β = 0) outputs exactly 0 in train and eval mode."""
    model = _model()
    selection = ChannelSelection(model, 600, channel_model="reference")
    masks = prune_to_target(model, selection)
    getattr(model, mode)()
    outputs = _bn_outputs(model, torch.randn(2, 3, 8, 8))
    dead = 0
    for gate in selection.graph.gates:
        off = ~masks[f"{gate}.weight"]
        dead += int(off.sum())
        assert (outputs[gate][:, off] == 0).all(), gate
    assert dead > 0


def test_structured_pruning_meets_the_parameter_budget() -> None:
    """The analytic count after pruning is within the budget and γ=0 channels are exactly the masked ones."""
    model = _model()
    selection = ChannelSelection(model, 700, channel_model="reference")
    th = selection.threshold(model)
    prune_to_target(model, selection)
    assert selection.graph.parameter_count(model, th) <= parameter_budget(model, 700)


def test_filter_mode_selects_exactly_the_adjacent_conv_slices() -> None:
    """F mode: slice W[o, i] of a conv is selected iff o is gated off after it or i is gated off before it."""
    model = _model()
    selection = ChannelSelection(model, 600, penalize_filters=True, channel_model="reference")
    keep = selection.keep_masks(model)
    adjacency = {"conv1": (None, "prunablebn1")}
    previous = "prunablebn1"
    for b in BLOCKS:
        adjacency[f"{b}.conv1"] = (previous, f"{b}.prunablebn1")
        adjacency[f"{b}.conv2"] = (f"{b}.prunablebn1", f"{b}.prunablebn3")
        previous = f"{b}.prunablebn3"
    adjacency["layer2.0.shortcut.0"] = ("layer1.1.prunablebn3", "layer2.0.prunablebn3")
    selected = {s.name: s.removed for s in selection.select(model)}
    assert {n for n in selected if "conv" in n or "shortcut" in n} == {f"{c}.weight" for c in adjacency}
    for conv, (before, after) in adjacency.items():
        weight = model.get_submodule(conv).weight
        dead_out = ~keep[after]
        dead_in = ~keep[before] if before else torch.zeros(weight.shape[1], dtype=torch.bool)
        expected = (dead_out[:, None] | dead_in[None, :])[:, :, None, None].expand_as(weight)
        assert torch.equal(selected[f"{conv}.weight"], expected), conv


def test_a_traced_graph_selects_what_a_fresh_trace_selects() -> None:
    """Given a graph traced before, the selection equals the one that traces the model itself; giving
    both ``gates`` and ``graph`` is refused (they could disagree).
    """
    model = _model(3)
    traced = ChannelSelection(model, 600, penalize_filters=True, channel_model="reference").select(model)
    given_graph = ChannelSelection(model, 600, penalize_filters=True, graph=GRAPH).select(model)
    assert [s.name for s in traced] == [s.name for s in given_graph]
    assert all(torch.equal(a.removed, b.removed) for a, b in zip(traced, given_graph, strict=True))
    with pytest.raises(ValueError, match="either gates or a traced graph"):
        ChannelSelection(model, 600, gates=GRAPH.gates, graph=GRAPH)


def test_structured_penalty_gradient_on_gamma_and_beta() -> None:
    """Structured SWD: gradient μ·a·γ and μ·a·β on selected channels, 0 elsewhere, conv weights untouched."""
    model = _model()
    swd = SelectiveWeightDecay(
        ChannelSelection(model, 600, channel_model="reference"), weight_decay=5e-4, total_steps=4, a_min=2.0
    )
    keep = swd.selection.keep_masks(model)
    swd.penalty(model).backward()
    for gate in swd.selection.graph.gates:
        bn = model.get_submodule(gate)
        off = ~keep[gate]
        for p in (bn.weight, bn.bias):
            torch.testing.assert_close(p.grad, 5e-4 * 2.0 * p.detach() * off, rtol=1e-6, atol=0)
    assert model.conv1.weight.grad is None


def test_graph_rejects_grouped_convolutions() -> None:
    """A grouped convolution is named in the error."""
    model = nn.Sequential(nn.Conv2d(4, 4, 3, groups=2), nn.BatchNorm2d(4))
    with pytest.raises(ValueError, match="'0'"):
        ChannelGraph.from_model(model)


class _PlainBlock(nn.Module):
    """Standard BasicBlock without the post-add BN: ReLU(bn2(conv2(·)) + x)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))) + x)


def test_residual_stream_without_post_add_bn_stays_ungated() -> None:
    """Without a post-add BN, the pre-add BN is no gate and conv2's outputs count as always live."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), _PlainBlock(4))
    graph = ChannelGraph.from_model(model)
    assert graph.gates == ["1", "3.bn1"]
    assert graph.convs["3.conv2"] == (frozenset({"3.bn1"}), None)
    assert graph.convs["3.conv1"] == (frozenset({"1"}), frozenset({"3.bn1"}))
    assert graph.parameter_count(model, 0.0) == sum(p.numel() for p in model.parameters())


class _Bottleneck(nn.Module):
    """Bottleneck of the SWD layout: 1×1, 3×3, 1×1 convs, 1×1 shortcut conv, BN after the addition."""

    def __init__(self, cin: int, planes: int) -> None:
        super().__init__()
        self.conv1, self.prunablebn1 = nn.Conv2d(cin, planes, 1, bias=False), nn.BatchNorm2d(planes)
        self.conv2, self.prunablebn2 = (
            nn.Conv2d(planes, planes, 3, padding=1, bias=False),
            nn.BatchNorm2d(planes),
        )
        self.conv3, self.bn3 = nn.Conv2d(planes, 4 * planes, 1, bias=False), nn.BatchNorm2d(4 * planes)
        self.shortcut = nn.Sequential(nn.Conv2d(cin, 4 * planes, 1, bias=False), nn.BatchNorm2d(4 * planes))
        self.prunablebn4 = nn.BatchNorm2d(4 * planes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.prunablebn1(self.conv1(x)))
        out = torch.relu(self.prunablebn2(self.conv2(out)))
        out = self.bn3(self.conv3(out)) + self.shortcut(x)
        return torch.relu(self.prunablebn4(out))


@given(st.floats(0.0, 1.0))
def test_bottleneck_count_matches_the_closed_form(th: float) -> None:
    """Bottleneck count = fin·f1 + 2f1 + 9f1·f2 + 2f2 + f2·fout + 6fout + fin·fout (spec §2.6)."""
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        _Bottleneck(4, 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 3),
    )
    randomize_bn(model, torch.Generator().manual_seed(1))
    block = model[3]

    def alive(bn: nn.BatchNorm2d) -> int:
        return int((bn.weight.detach().abs() >= th).sum())

    fin, f1, f2, fout = (
        alive(model[1]),
        alive(block.prunablebn1),
        alive(block.prunablebn2),
        alive(block.prunablebn4),
    )
    expected = 27 * fin + 2 * fin
    expected += (
        fin * f1 + 2 * f1 + 9 * f1 * f2 + 2 * f2 + f2 * fout + 2 * fout + fin * fout + 2 * fout + 2 * fout
    )
    expected += fout * 3 + 3
    assert ChannelGraph.from_model(model).parameter_count(model, th) == expected


@pytest.mark.parametrize("shortcut", ["A", "B"])
def test_registry_resnet_with_bn_after_add(shortcut: str) -> None:
    """The registry's CIFAR ResNet with bn_after_add: gates are stem/bn1/bn3, P(0) = N_total, budget met."""
    from slimtrain.models import create_model

    model = create_model("resnet8", bn_after_add=True, shortcut=shortcut)
    randomize_bn(model, torch.Generator().manual_seed(2))
    selection = ChannelSelection(model, 750, channel_model="reference")
    stages = [f"layer{i}.0" for i in (1, 2, 3)]
    assert selection.graph.gates == ["bn1"] + [f"{s}.bn{j}" for s in stages for j in (1, 3)]
    total = sum(p.numel() for p in model.parameters())
    assert selection.graph.parameter_count(model, 0.0) == total
    assert selection.graph.parameter_count(model, selection.threshold(model)) <= parameter_budget(model, 750)

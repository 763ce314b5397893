"""Structured pruning over coupled channel groups: masked ≡ thinned model; option-A shortcuts refused."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from slimtrain.compress import (
    UnsupportedChannelFlowError,
    apply_channel_masks,
    channels_kept,
    check_channel_flow,
    coupled_channel_groups,
    filter_pruning_plan,
    remove_channels,
)

from .toy_models import build, example_input


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@settings(max_examples=6)
@given(
    st.sampled_from(["resnet_b", "vgg", "mlp"]),
    st.sampled_from([0.1, 0.25, 0.5, 0.75, 0.9]),
    st.sampled_from([None, 2]),
)
def test_thinned_model_equals_masked_model(name, fraction, round_to):
    """For every toy model and level, the physically thinned model's outputs equal the masked model's."""
    model = build(name)
    x = example_input()
    plan = filter_pruning_plan(model, fraction, x, include_linear=name == "mlp", round_to=round_to)
    masked = apply_channel_masks(model, plan)
    thinned = remove_channels(model, plan, x)
    fresh = example_input(batch=4)
    torch.testing.assert_close(thinned(fresh), masked(fresh), rtol=1e-9, atol=1e-9)
    removed = sum(len(s.pruned) for s in plan.selections)
    assert (_params(thinned) < _params(model)) == (removed > 0)


def test_residual_group_couples_producers_batchnorms_and_consumers():
    """The stem's channels are one group with every block output of stage 1 and its consumers."""
    model = build("resnet_b")
    groups = {g.root: g for g in coupled_channel_groups(model, example_input())}
    stem = {(s.module, s.dim) for s in groups["conv"].members}
    assert stem == {
        ("conv", "out"),
        ("bn", "out"),
        ("layer1.conv1", "in"),
        ("layer1.conv2", "out"),
        ("layer1.bn2", "out"),
        ("layer2.0.conv1", "in"),
        ("layer2.0.shortcut.0", "in"),
    }
    assert "classifier" not in groups  # its outputs are the model's outputs
    assert all(g.root != "layer1.conv2" for g in groups.values())  # covered by the stem's group


def test_masks_zero_whole_channels_in_every_member():
    """Pruned channels are zero in producers (weight, bias, BN γ/β) and in consumers' input weights."""
    model = build("vgg")
    plan = filter_pruning_plan(model, 0.5, example_input())
    masked = apply_channel_masks(model, plan)
    for selection in plan.selections:
        for s in selection.slices:
            module = masked.get_submodule(s.module)
            idx = list(s.indices)
            if s.dim == "out":
                assert torch.all(module.weight[idx] == 0)
                if module.bias is not None:
                    assert torch.all(module.bias[idx] == 0)
            else:
                assert torch.all(module.weight[:, idx] == 0)


def test_flatten_consumer_loses_all_spatial_features():
    """After flatten, pruning one of 8 channels removes its 4 spatial features from the first linear."""
    model = build("vgg")
    plan = filter_pruning_plan(model, 0.125, example_input(), ignored_layers=["features.0", "features.3"])
    thinned = remove_channels(model, plan, example_input())
    assert thinned.features[7].out_channels == 7
    assert thinned.classifier[1].in_features == 28
    kept = thinned.classifier[1].slimtrain_kept_channels["in"]
    assert len(kept) == 28 and kept == sorted(kept)


def test_l1_ranking_removes_smallest_filters():
    """In a plain conv chain the filters with the smallest L1 norms are the ones removed."""
    model = nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.Conv2d(6, 2, 3)).double()
    with torch.no_grad():
        for i, scale in enumerate([5.0, 0.1, 3.0, 0.2, 4.0, 0.3]):
            model[0].weight[i] = scale
    plan = filter_pruning_plan(model, 0.5, example_input())
    assert plan.selections[0].pruned == (1, 3, 5)


def test_kept_channel_indices_compose_over_two_rounds():
    """Thinning twice records kept indices relative to the original model."""
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 2, 3)).double()
    x = example_input()
    with torch.no_grad():
        model[0].weight.mul_(torch.arange(1, 9, dtype=torch.float64)[:, None, None, None])
    once = remove_channels(model, filter_pruning_plan(model, 0.25, x), x)
    twice = remove_channels(once, filter_pruning_plan(once, 0.5, x), x)
    assert once[0].slimtrain_kept_channels["out"] == [2, 3, 4, 5, 6, 7]
    assert twice[0].slimtrain_kept_channels["out"] == [5, 6, 7]
    assert twice[2].slimtrain_kept_channels["in"] == [5, 6, 7]


@pytest.mark.parametrize(
    "size,fraction,round_to,kept",
    [
        (16, 0.5, None, 8),
        (10, 0.25, None, 8),
        (16, 0.4, 4, 8),
        (10, 0.95, None, 1),
        (6, 0.9, 4, 4),
        (5, 0.0, 4, 4),
    ],
)
def test_channels_kept_rule(size, fraction, round_to, kept):
    """Kept = size − round(fraction·size), rounded to a multiple of round_to, at least 1 and at most size."""
    assert channels_kept(size, fraction, round_to) == kept


def test_input_model_is_not_modified():
    """Planning, masking and removal leave the input model's weights and training flag unchanged."""
    model = build("resnet_b").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    plan = filter_pruning_plan(model, 0.5, example_input())
    apply_channel_masks(model, plan)
    remove_channels(model, plan, example_input())
    assert model.training
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_option_a_shortcut_is_refused_with_its_location():
    """A zero-padding shortcut is refused before any pruning, naming the op and the module it runs in."""
    model = build("resnet_a")
    with pytest.raises(UnsupportedChannelFlowError, match=r"pad in 'layer2\.0\.shortcut'.*from 4 to 8"):
        filter_pruning_plan(model, 0.5, example_input())
    with pytest.raises(UnsupportedChannelFlowError):
        check_channel_flow(model, example_input())


def test_concatenating_constant_channels_is_refused():
    """Concatenating a constant tensor on the channel axis is refused (DepGraph would misplace offsets)."""

    class CatZeros(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)
            self.head = nn.Conv2d(8, 2, 1)

        def forward(self, x):
            y = self.conv(x)
            return self.head(torch.cat([y, torch.zeros_like(y).detach()], dim=1))

    with pytest.raises(UnsupportedChannelFlowError, match="constant tensor"):
        filter_pruning_plan(CatZeros(), 0.5, torch.randn(1, 3, 4, 4))


def test_layer_norm_coupled_to_pruned_channels_is_refused():
    """A layer without per-channel exactness (LayerNorm over features) in a group is refused, named."""
    model = nn.Sequential(nn.Linear(6, 8), nn.LayerNorm(8), nn.Linear(8, 2))
    with pytest.raises(UnsupportedChannelFlowError, match=r"'1'.*LayerNorm"):
        filter_pruning_plan(model, 0.5, torch.randn(2, 6), include_linear=True)


def _separable(groups: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=groups), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 6, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3),
    ).double().eval()  # fmt: skip


def test_depthwise_conv_is_thinned_with_its_input():
    """A depthwise conv shares its channels with its producer; thinned ≡ masked; grouped convs are refused."""
    model, x = _separable(groups=8), example_input()
    plan = filter_pruning_plan(model, 0.5, x)
    thinned = remove_channels(model, plan, x)
    assert thinned[3].groups == thinned[3].in_channels == thinned[0].out_channels == 4
    torch.testing.assert_close(thinned(x), apply_channel_masks(model, plan)(x), rtol=1e-9, atol=1e-9)
    with pytest.raises(UnsupportedChannelFlowError, match=r"grouped conv '3'"):
        filter_pruning_plan(_separable(groups=2), 0.5, x)

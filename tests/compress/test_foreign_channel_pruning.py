"""Channel pruning, export and save/load on layers slimtrain was not written for.

Transposed convs (weight ``[in, out, k...]``), BatchNorm and Conv2d subclasses with their own ``forward``;
recurrent and re-parametrized layers are refused by name.
"""

import pytest
import torch
from tests.conformance.zoo import BatchNormAct2d, Conv2dSame
from torch import nn

from slimtrain.compress import (
    UnsupportedChannelFlowError,
    apply_channel_masks,
    filter_pruning_plan,
    fold_masks,
    load_exported,
    remove_channels,
    save_exported,
    to_exported,
)
from slimtrain.errors import UnsupportedModelError


def _decoder(width: int) -> nn.Sequential:
    """Conv 3→8 (s2), ReLU, ConvTranspose 8→width (s2), ReLU, 1×1 conv width→3."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.ConvTranspose2d(8, width, 4, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(width, 3, 1),
    )


def bn_act_net() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),
        BatchNormAct2d(8),
        nn.Conv2d(8, 6, 3, padding=1, bias=False),
        BatchNormAct2d(6),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 4),
    )
    for m in model.modules():  # distinct γ/β/statistics, so a wrong channel would show
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.normal_(m.bias)
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def same_pad_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        Conv2dSame(3, 8, 3, stride=2, bias=False),
        nn.ReLU(),
        Conv2dSame(8, 6, 4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 4),
    ).eval()


def _run(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


def _pruned_of(plan, root: str) -> tuple[int, ...]:
    return next(s.pruned for s in plan.selections if s.group.root == root)


@pytest.mark.parametrize("width", [8, 6, 12])
def test_transposed_conv_loses_output_channels_along_its_second_weight_axis(width):
    """A ConvTranspose2d's output channels are weight[:, j]: ranked, masked, removed there; export=masked."""
    torch.manual_seed(0)
    model = _decoder(width).eval()
    x = torch.randn(2, 3, 9, 9)
    plan = filter_pruning_plan(model, 0.5, x)
    up = model[2].weight.detach()
    pruned_out = _pruned_of(plan, "2")
    # The weakest output channels by L1 over the transposed conv's own [in, out, k, k] weight.
    l1 = up.abs().sum(dim=(0, 2, 3))
    assert set(pruned_out) == set(torch.argsort(l1)[: width // 2].tolist())
    pruned_in = _pruned_of(plan, "0")
    kept_in = [i for i in range(8) if i not in pruned_in]
    kept_out = [j for j in range(width) if j not in pruned_out]

    masked = apply_channel_masks(model, plan)
    w = masked[2].weight.detach()
    assert w[:, list(pruned_out)].eq(0).all() and w[list(pruned_in)].eq(0).all()
    assert w[kept_in][:, kept_out].ne(0).all()  # nothing else is zeroed

    thinned = remove_channels(model, plan, x)
    assert thinned[2].weight.shape == (len(kept_in), len(kept_out), 4, 4)
    torch.testing.assert_close(thinned[2].weight, up[kept_in][:, kept_out])
    fresh = torch.randn(3, 3, 11, 11)
    torch.testing.assert_close(_run(thinned, fresh), _run(masked, fresh))
    # The export reads the zeroed channels from the masked weights and removes the same ones.
    exported = to_exported(masked, "filter", x)
    assert exported[2].weight.shape == thinned[2].weight.shape
    torch.testing.assert_close(_run(exported, fresh), _run(masked, fresh))


def test_thinned_transposed_conv_saves_and_loads(tmp_path):
    """A thinned ConvTranspose2d is recorded in the manifest and rebuilt at its new shape."""

    def factory():
        return _decoder(6)

    torch.manual_seed(0)
    model = factory().eval()
    x = torch.randn(2, 3, 9, 9)
    thinned = remove_channels(model, filter_pruning_plan(model, 0.5, x), x)
    save_exported(thinned, tmp_path / "exported", base=factory)
    loaded = load_exported(tmp_path / "exported", factory=factory)
    assert type(loaded[2]) is nn.ConvTranspose2d and loaded[2].out_channels == thinned[2].out_channels < 6
    torch.testing.assert_close(_run(loaded, x), _run(thinned, x), rtol=0, atol=0)


def test_grouped_transposed_conv_is_refused_by_name():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.ReLU(), nn.ConvTranspose2d(8, 8, 2, groups=2), nn.Conv2d(8, 2, 1)
    )
    with pytest.raises(UnsupportedChannelFlowError, match=r"'2' \(ConvTranspose2d, groups=2\)"):
        filter_pruning_plan(model, 0.5, torch.randn(1, 3, 8, 8))


class _Recurrent(nn.Module):
    def __init__(self, rnn: nn.Module, features: int):
        super().__init__()
        self.proj = nn.Conv1d(4, 8, 1)
        self.rnn = rnn
        self.head = nn.Linear(features, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(self.proj(x).transpose(1, 2))
        return self.head(out[:, -1])


@pytest.mark.parametrize(
    ("rnn", "features", "kind"),
    [
        (lambda: nn.LSTM(8, 6, num_layers=2, bidirectional=True, batch_first=True), 12, "LSTM"),
        (lambda: nn.GRU(8, 6, batch_first=True), 6, "GRU"),
    ],
)
def test_recurrent_layer_is_refused_by_name(rnn, features, kind):
    """Channels are not followed through recurrent layers: refused at the plan, naming the layer."""
    model = _Recurrent(rnn(), features)
    with pytest.raises(UnsupportedChannelFlowError, match=rf"'rnn' \({kind}\).*unstructured"):
        filter_pruning_plan(model, 0.5, torch.randn(2, 4, 5))


def test_batchnorm_subclass_thins_saves_and_loads_with_its_class(tmp_path):
    """A BatchNorm2d subclass with a fused activation: thinned = masked, and thin → save → load is exact."""
    model = bn_act_net()
    x = torch.randn(2, 3, 8, 8)
    plan = filter_pruning_plan(model, 0.5, x)
    thinned = remove_channels(model, plan, x)
    torch.testing.assert_close(_run(thinned, x), _run(apply_channel_masks(model, plan), x))
    assert thinned[1].num_features == 4 and thinned[3].num_features == 3
    save_exported(thinned, tmp_path / "exported", base=bn_act_net)
    loaded = load_exported(tmp_path / "exported", factory=bn_act_net)
    assert type(loaded[1]) is BatchNormAct2d and loaded[1].weight.shape == (4,)
    torch.testing.assert_close(_run(loaded, x), _run(thinned, x), rtol=0, atol=0)


def test_conv_subclass_with_its_own_forward_thins_saves_and_loads(tmp_path):
    """A Conv2d subclass computing its own padding keeps its forward through thinning and reloading."""
    model = same_pad_net()
    x = torch.randn(2, 3, 9, 9)
    plan = filter_pruning_plan(model, 0.5, x)
    masked = apply_channel_masks(model, plan)
    thinned = remove_channels(model, plan, x)
    fresh = torch.randn(2, 3, 13, 13)  # another size: the padding is recomputed
    torch.testing.assert_close(_run(thinned, fresh), _run(masked, fresh))
    assert type(thinned[0]) is Conv2dSame and thinned[0].out_channels == 4
    save_exported(thinned, tmp_path / "exported", base=same_pad_net)
    loaded = load_exported(tmp_path / "exported", factory=same_pad_net)
    assert type(loaded[2]) is Conv2dSame and loaded[2].weight.shape == (3, 4, 4, 4)
    torch.testing.assert_close(_run(loaded, fresh), _run(thinned, fresh), rtol=0, atol=0)


def test_parametrized_layer_is_refused_by_name_until_folded():
    """weight_norm computes its weight: pruning its channels is refused, naming it; folded, it prunes."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.utils.parametrizations.weight_norm(nn.Linear(8, 4)),
    ).eval()
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(UnsupportedModelError, match=r"'4' \(ParametrizedLinear\).*fold_masks"):
        filter_pruning_plan(model, 0.5, x)
    folded = fold_masks(model)
    plan = filter_pruning_plan(folded, 0.5, x)
    torch.testing.assert_close(
        _run(remove_channels(folded, plan, x), x), _run(apply_channel_masks(folded, plan), x)
    )


def test_a_level_with_nothing_to_remove_is_refused():
    """No conv whose channels can go: refused (the model would come back unpruned), except at level 0."""
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    x = torch.randn(2, 6)
    with pytest.raises(UnsupportedModelError, match=r"Sequential has no conv layer.*include_linear=True"):
        filter_pruning_plan(model, 0.5, x)
    assert filter_pruning_plan(model, 0.0, x).selections == ()
    assert filter_pruning_plan(model, 0.5, x, include_linear=True).selections

"""Channel functions on wrapped models (``torch.compile``, ``DataParallel``) and on models whose channels meet
a model input or output beyond the first (a layer applied to its own output, a returned hidden state).

Names computed on a wrapper are those of the model inside it (slimtrain._wrappers); no channel group holding
channels of a model input or of any model output is removable.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import slimtrain
from slimtrain import compress
from slimtrain._wrappers import unwrap_model
from slimtrain.errors import UnsupportedModelError
from slimtrain.swd import ChannelSelection, GroupGates


def _convnet() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    ).double()


def _image() -> torch.Tensor:
    return torch.randn(2, 3, 8, 8, dtype=torch.float64)


def _eval(model: nn.Module, x: torch.Tensor):
    with torch.no_grad():
        return model.eval()(x)


@pytest.mark.parametrize("wrap", [torch.compile, nn.DataParallel], ids=["compile", "data_parallel"])
def test_results_computed_on_a_wrapper_name_the_model_inside(wrap):
    """Plans, groups, masks and gates of a wrapped model equal the model inside it (traced unwrapped)."""
    plain, x = _convnet(), _image()
    wrapped = wrap(plain)
    compress.check_channel_flow(wrapped, x)
    plan = compress.filter_pruning_plan(wrapped, 0.5, x)
    assert plan == compress.filter_pruning_plan(plain, 0.5, x) and plan.selections
    assert compress.coupled_channel_groups(wrapped, x) == compress.coupled_channel_groups(plain, x)
    masks = compress.channel_masks(wrapped, plan)
    assert masks.keys() <= dict(plain.named_parameters()).keys()
    assert compress.global_magnitude_masks(wrapped, 0.5).keys() <= dict(plain.named_parameters()).keys()
    gates = GroupGates.from_model(wrapped, x)
    assert gates.groups == GroupGates.from_model(plain, x).groups
    selection = ChannelSelection(wrapped, target=500, example_inputs=x)
    names = [s.name for s in selection.select(wrapped)]
    assert names == [s.name for s in ChannelSelection(plain, target=500, example_inputs=x).select(plain)]


def test_a_plan_computed_on_data_parallel_applies_to_its_module():
    """The copying functions refuse the wrapper naming model.module, where the same plan and masks work."""
    plain, x = _convnet(), _image()
    dp = nn.DataParallel(plain)
    plan = compress.filter_pruning_plan(dp, 0.5, x)
    for refused in (
        lambda: compress.remove_channels(dp, plan, x),
        lambda: compress.apply_channel_masks(dp, plan),
        lambda: compress.apply_masks(dp, compress.global_magnitude_masks(dp, 0.5)),
    ):
        with pytest.raises(UnsupportedModelError, match=r"DataParallel.*model\.module"):
            refused()
    thinned = compress.remove_channels(dp.module, plan, x)
    torch.testing.assert_close(_eval(thinned, x), _eval(compress.apply_channel_masks(dp.module, plan), x))
    assert sum(p.numel() for p in thinned.parameters()) < sum(p.numel() for p in plain.parameters())
    masked = compress.apply_masks(dp.module, compress.global_magnitude_masks(dp, 0.5))
    assert (masked[0].weight == 0).any()


def test_channels_removed_from_a_compiled_model_inside_its_wrapper():
    compiled, x = torch.compile(_convnet()), _image()
    plan = compress.filter_pruning_plan(compiled, 0.5, x)
    thinned = compress.remove_channels(compiled, plan, x)
    assert unwrap_model(thinned) is not unwrap_model(compiled)
    expected = _eval(compress.apply_channel_masks(unwrap_model(compiled), plan), x)
    torch.testing.assert_close(_eval(unwrap_model(thinned), x), expected)


def test_save_exported_unwraps_a_compiled_base(tmp_path):
    def factory() -> nn.Module:
        torch.manual_seed(0)
        return torch.compile(nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)))

    x = torch.randn(2, 8)
    pruned = compress.global_magnitude_prune(factory(), 0.5)
    compress.save_exported(pruned, tmp_path / "e", base=factory)
    loaded = slimtrain.load(tmp_path / "e", factory=factory)
    torch.testing.assert_close(_eval(loaded, x), _eval(unwrap_model(pruned), x), rtol=0, atol=0)


class _SelfApplied(nn.Module):
    """``a`` applied to its own output, whose first call reads the model input; a plain branch d → e."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.d, self.e = nn.Linear(8, 8), nn.Linear(8, 4), nn.Linear(8, 6), nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(torch.relu(self.a(x))))) + self.e(torch.relu(self.d(x)))


class _ReturnsHidden(nn.Module):
    """Returns a hidden feature map with the logits (in either order)."""

    def __init__(self, hidden_first: bool) -> None:
        super().__init__()
        self.hidden_first = hidden_first
        self.a, self.c, self.b = nn.Linear(8, 16), nn.Linear(16, 12), nn.Linear(12, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.relu(self.a(x))
        logits = self.b(torch.relu(self.c(h)))
        return (h, logits) if self.hidden_first else (logits, h)


class _SharedConv(nn.Module):
    """One conv applied to two branches, summed."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2, self.s = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(3, 8, 1), nn.Conv2d(8, 6, 3)
        self.head = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.s(torch.relu(self.c1(x))) + self.s(torch.relu(self.c2(x)))
        return self.head(torch.relu(y).mean((2, 3)))


@pytest.mark.parametrize(
    "model,thinned_layers",
    [
        (_SelfApplied(), {"d"}),
        (_ReturnsHidden(hidden_first=False), {"c"}),
        (_ReturnsHidden(hidden_first=True), {"c"}),
        (_SharedConv(), {"c1", "c2", "s"}),
    ],
    ids=["self_applied", "hidden_second", "hidden_first", "shared_conv"],
)
def test_groups_meeting_a_model_input_or_output_are_not_removable(model, thinned_layers):
    """Only groups away from the model's inputs and outputs are planned; removing them is exact and keeps
    every input and output width.
    """
    torch.manual_seed(1)
    model = model.double()
    x = torch.randn(2, 3, 8, 8) if isinstance(model, _SharedConv) else torch.randn(2, 8)
    x = x.double()
    plan = compress.filter_pruning_plan(model, 0.5, x, include_linear=True)
    assert {m.module for s in plan.selections for m in s.slices if m.dim == "out"} == thinned_layers
    thinned = compress.remove_channels(model, plan, x)  # verifies every output against the masked model
    expected, actual = _eval(model, x), _eval(thinned, x)
    assert [t.shape for t in torch.utils._pytree.tree_leaves(actual)] == [
        t.shape for t in torch.utils._pytree.tree_leaves(expected)
    ]
    torch.testing.assert_close(_eval(compress.apply_channel_masks(model, plan), x), actual)


def test_a_linear_fed_its_own_output_alone_is_refused_not_mis_pruned():
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(torch.relu(self.a(torch.relu(self.a(x)))))

    model, x = Twice(), torch.randn(2, 8)
    assert compress.coupled_channel_groups(model, x, root_types=(nn.Linear,)) == []
    with pytest.raises(UnsupportedModelError, match="model input"):
        compress.filter_pruning_plan(model, 0.5, x, include_linear=True)


def test_gates_leave_out_a_batchnorm_whose_channels_are_returned():
    class Hidden(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = _convnet()[:6]
            self.fc = nn.Linear(8, 4).double()

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            h = self.features[:3](x)
            return self.fc(self.features[3:](h).mean((2, 3))), h

    model, x = Hidden(), _image()
    gates = GroupGates.from_model(model, x)
    assert "features.1" not in gates.gates and "features.4" in gates.gates
    roots = {g.root for g in compress.coupled_channel_groups(model, x, root_types=(nn.Conv2d, nn.Linear))}
    assert {g.root for g in gates.groups} <= roots

"""Unstructured SWD selection: exact global top-k (corrected) and the reference threshold (faithful)."""

import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from slimtrain.swd import MagnitudeSelection
from slimtrain.swd.selection import permille_count

from .swd_models import SmallCNN


def _tiny() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 2, 2, bias=False), nn.Flatten(), nn.Linear(8, 3)).double()


@given(st.lists(st.integers(-3, 3), min_size=32, max_size=32), st.integers(0, 999))
def test_selected_set_is_the_stable_global_bottom_k(values: list[int], target: int) -> None:
    """Corrected mode selects exactly the first ⌊target/1000·n⌋ entries of a stable ascending sort of |w|."""
    model = _tiny()
    flat = torch.tensor(values, dtype=torch.float64)
    with torch.no_grad():
        model[0].weight.copy_(flat[:8].view(2, 1, 2, 2))
        model[2].weight.copy_(flat[8:].view(3, 8))
    selected = MagnitudeSelection(target).select(model)
    assert [s.name for s in selected] == ["0.weight", "2.weight"]
    got = torch.cat([s.removed.flatten() for s in selected])
    order = torch.sort(flat.abs(), stable=True).indices
    expected = torch.zeros_like(got)
    expected[order[: permille_count(32, target)]] = True
    assert torch.equal(got, expected)


def test_population_excludes_biases_and_batchnorm() -> None:
    """Corrected population: conv and linear weights only; no bias and no BN tensor is ever selected."""
    model = SmallCNN()
    names = [s.name for s in MagnitudeSelection(990).select(model)]
    assert names == ["conv.weight", "fc.weight"]


def test_reference_mode_reproduces_threshold_index_and_selects_batchnorm() -> None:
    """Faithful: th = sorted |w| (names without 'bn')[⌊t·n⌋]; entries < th are selected everywhere, BN too."""
    model = SmallCNN()
    with torch.no_grad():
        model.bn.weight.fill_(1e-6)
        model.bn.bias.fill_(1e-6)
    target = 500
    counted = torch.cat([p.abs().flatten() for n, p in model.named_parameters() if "bn" not in n]).sort()[0]
    threshold = counted[int(target / 1000 * counted.numel())]
    selected = {s.name: s.removed for s in MagnitudeSelection(target, "reference").select(model)}
    assert set(selected) == {n for n, _ in model.named_parameters()}
    for name, p in model.named_parameters():
        assert torch.equal(selected[name], p.abs() < threshold), name
    assert selected["bn.weight"].all() and selected["bn.bias"].all()


def test_selection_is_recomputed_when_weights_change() -> None:
    """The mask follows the current weights: shrinking a kept weight to 0 moves it into the selected set."""
    model = SmallCNN()
    selection = MagnitudeSelection(500)
    before = {s.name: s.removed.clone() for s in selection.select(model)}
    index = torch.nonzero(~before["fc.weight"])[0]
    with torch.no_grad():
        model.fc.weight[tuple(index)] = 0.0
    after = {s.name: s.removed for s in selection.select(model)}
    assert after["fc.weight"][tuple(index)]
    assert sum(int(m.sum()) for m in after.values()) == sum(int(m.sum()) for m in before.values())


def test_bad_target_is_rejected() -> None:
    """A target outside [0, 1000) names itself in the error."""
    try:
        MagnitudeSelection(1000)
    except ValueError as exc:
        assert "1000" in str(exc)
    else:
        raise AssertionError("target 1000 accepted")

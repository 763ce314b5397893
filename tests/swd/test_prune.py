"""Final hard pruning at the SWD target."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from slimtrain.pruning import MaskSet
from slimtrain.swd import MagnitudeSelection, SelectiveWeightDecay, population_weights, prune_to_target
from slimtrain.swd.selection import permille_count

from .swd_models import SmallCNN


@given(st.integers(0, 999))
def test_sparsity_equals_the_target_exactly(target: int) -> None:
    """Corrected mode: exactly ⌊target/1000·n⌋ zeros over conv+linear weights; biases and BN untouched."""
    model = SmallCNN()
    weights = population_weights(model)
    others = {n: p.detach().clone() for n, p in model.named_parameters() if n not in weights}
    masks = prune_to_target(model, target)
    n = sum(w.numel() for w in weights.values())
    zeros = sum(int((w == 0).sum()) for w in weights.values())
    assert zeros == permille_count(n, target)
    assert set(masks) == set(weights)
    for name, p in model.named_parameters():
        if name in others:
            assert torch.equal(p, others[name]), name


def test_reference_mode_prunes_at_least_the_target_and_batchnorm() -> None:
    """Faithful mode: ⌊t·n⌋ zeros over the counted population (no ties), and small BN entries are zeroed."""
    model = SmallCNN()
    with torch.no_grad():
        model.bn.weight[0] = 1e-9
    prune_to_target(model, MagnitudeSelection(800, "reference"))
    counted = torch.cat([p.flatten() for n, p in model.named_parameters() if "bn" not in n])
    assert int((counted == 0).sum()) == permille_count(counted.numel(), 800)
    assert model.bn.weight[0] == 0


def test_regularizer_prune_uses_its_selection_and_keeps_eval_mode_choice() -> None:
    """SelectiveWeightDecay.prune prunes with the training rule and leaves the train/eval mode as it was."""
    model = SmallCNN().eval()
    swd = SelectiveWeightDecay(MagnitudeSelection(500), weight_decay=5e-4, total_steps=1)
    masks = swd.prune(model)
    assert not model.training
    assert all(torch.equal(p == 0, ~masks[n]) for n, p in population_weights(model).items())


def test_masks_hold_zeros_through_optimizer_steps() -> None:
    """MaskSet attached to SGD keeps pruned entries at 0 across steps despite gradients and momentum."""
    model = SmallCNN()
    masks = MaskSet(model, prune_to_target(model, 900))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    masks.attach(optimizer)
    for _ in range(3):
        optimizer.zero_grad()
        model(torch.randn(4, 1, 8, 8)).square().sum().backward()
        optimizer.step()
    assert masks.sparsity() == pytest.approx(permille_count(756, 900) / 756)
    for name, mask in masks.masks.items():
        assert (model.get_parameter(name)[~mask] == 0).all()


def test_a_weight_norm_weight_is_pruned_as_a_plain_parameter() -> None:
    """A ``weight_norm`` weight belongs to the population at the final pruning too (not only when grad mode is
    on): it is made a plain parameter and ⌊target/1000·n⌋ weights are zeroed in total.
    """
    model = torch.nn.Sequential(torch.nn.Linear(8, 6), torch.nn.ReLU(), torch.nn.Linear(6, 2))
    model[0] = torch.nn.utils.parametrizations.weight_norm(model[0])
    n = sum(w.numel() for w in population_weights(model).values())
    masks = prune_to_target(model, 750)
    assert set(masks) == {"0.weight", "2.weight"}
    assert isinstance(model[0].weight, torch.nn.Parameter)
    zeros = int((model[0].weight == 0).sum() + (model[2].weight == 0).sum())
    assert zeros == permille_count(n, 750)

"""Unstructured magnitude pruning: exact counts over the stated population, largest entries kept."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import prune

from slimtrain.compress import (
    apply_masks,
    fold_masks,
    global_magnitude_masks,
    global_magnitude_prune,
    layerwise_magnitude_prune,
    population_parameters,
)
from slimtrain.pruning.magnitude import removal_count

from .toy_models import build, example_input

levels = st.sampled_from([0.0, 0.5, 0.7, 0.9, 0.95, 0.99, 1.0]) | st.floats(0.0, 1.0)


@settings(max_examples=15)
@given(levels, st.sampled_from(["prunable", "all"]))
def test_global_pruning_reaches_exact_sparsity(sparsity, population):
    """Exactly ⌊s·N⌋ entries of the population are zero; nothing outside it changes; input untouched."""
    model = build("resnet_b")
    with torch.no_grad():  # no exact zeros before pruning
        for p in model.parameters():
            p.add_(torch.where(p == 0, 1e-3, 0.0))
    result = global_magnitude_prune(model, sparsity, population=population)
    pop = population_parameters(result, population)
    total = sum(p.numel() for p in pop.values())
    zeros = sum(int((p == 0).sum()) for p in pop.values())
    assert zeros == removal_count(total, sparsity)
    for name, p in result.named_parameters():
        if name not in pop:
            assert torch.equal(p, dict(model.named_parameters())[name])


def test_prunable_population_is_conv_and_linear_weights():
    """'prunable' = weights of convs and linears (no biases, no BN); 'all' = every parameter."""
    model = build("vgg")
    assert set(population_parameters(model, "prunable")) == {
        "features.0.weight",
        "features.3.weight",
        "features.7.weight",
        "classifier.1.weight",
        "classifier.3.weight",
    }
    assert set(population_parameters(model, "all")) == {n for n, _ in model.named_parameters()}


def test_global_masks_keep_the_largest_magnitudes():
    """Every kept entry is at least as large in magnitude as every removed entry, across layers."""
    model = build("mlp")
    masks = global_magnitude_masks(model, 0.8)
    params = dict(model.named_parameters())
    kept = torch.cat([params[n].abs()[m] for n, m in masks.items()])
    dropped = torch.cat([params[n].abs()[~m] for n, m in masks.items()])
    assert kept.min() >= dropped.max()


def test_ties_are_broken_by_position():
    """With all-equal magnitudes the lowest flat indices are removed first (same mask on every process)."""
    model = nn.Sequential(nn.Linear(4, 4, bias=False))
    nn.init.constant_(model[0].weight, 0.5)
    masks = global_magnitude_masks(model, 0.25)
    assert masks["0.weight"].flatten().tolist() == [False] * 4 + [True] * 12


@given(st.floats(0.0, 1.0))
def test_layerwise_pruning_per_tensor_counts(sparsity):
    """Every conv/linear weight loses exactly ⌊s·numel⌋ entries."""
    model = build("vgg")
    result = layerwise_magnitude_prune(model, sparsity)
    for p in population_parameters(result).values():
        assert int((p == 0).sum()) == removal_count(p.numel(), sparsity)


def test_masked_model_equals_folded_torch_prune_model():
    """fold_masks turns torch.nn.utils.prune re-parametrizations into plain weights with the same function."""
    model = build("mlp")
    masks = global_magnitude_masks(model, 0.6)
    hooked = build("mlp")
    hooked.load_state_dict(model.state_dict())
    for name, mask in masks.items():
        prune.custom_from_mask(hooked.get_submodule(name.rsplit(".", 1)[0]), "weight", mask)
    folded = fold_masks(hooked)
    assert set(folded.state_dict()) == set(model.state_dict())
    x = example_input()
    torch.testing.assert_close(folded(x), apply_masks(model, masks)(x))
    assert prune.is_pruned(hooked)

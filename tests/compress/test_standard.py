"""compress_standard: the sweep's one-shot operators by structure name."""

import warnings

import pytest
import torch

from slimtrain.compress import FactorizationCostWarning, compress_standard
from slimtrain.layers import SVDConv2d
from slimtrain.pruning.magnitude import removal_count

from .toy_models import build, example_input


def test_structures_do_what_they_name():
    """Unstructured hits the sparsity; filter masks channels; lowrank factorizes convs; native is identity."""
    model, x = build("resnet_b"), example_input()
    assert compress_standard(model, "native", 0.0) is model
    pruned = compress_standard(model, "unstructured", 0.9)
    weights = [m.weight for m in pruned.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert sum(int((w == 0).sum()) for w in weights) == removal_count(sum(w.numel() for w in weights), 0.9)
    masked = compress_standard(model, "filter", 0.5, example_inputs=x)
    assert int((masked.conv.weight.flatten(1).abs().sum(1) == 0).sum()) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FactorizationCostWarning)
        factorized = compress_standard(model, "lowrank", 0.5)
    assert isinstance(factorized.layer1.conv1, SVDConv2d)


def test_bad_structure_or_missing_input_refused():
    """An unknown structure is named; 'filter' without example inputs says what is missing."""
    model = build("mlp")
    with pytest.raises(ValueError, match="'cp'"):
        compress_standard(model, "cp", 0.5)
    with pytest.raises(ValueError, match="example_inputs"):
        compress_standard(model, "filter", 0.5)

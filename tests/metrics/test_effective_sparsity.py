import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from slimtrain.metrics import effective_sparsity, effective_weight_masks, sparsity
from slimtrain.metrics.effective_sparsity import is_relu_mlp


def _mlp(*dims, bias=False):
    layers = []
    for i in range(len(dims) - 1):
        layers += [nn.Linear(dims[i], dims[i + 1], bias=bias), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def test_zero_row_prunes_outgoing_column():
    """An all-zero row of W_1 makes column j of W_2 effectively pruned (spec §8.6)."""
    model = _mlp(3, 4, 2)
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[2].weight.fill_(1.0)
        model[0].weight[1] = 0
    masks = effective_weight_masks([model[0].weight, model[2].weight])
    assert not masks[1][:, 1].any() and masks[1][:, [0, 2, 3]].all()
    assert sparsity(model, "prunable") == pytest.approx(3 / 20)
    assert effective_sparsity(model) == pytest.approx(5 / 20)


def test_dead_units_propagate_to_fixed_point():
    """A zero column of W_3 kills unit j of layer 2, whose dead row leaves unit k of layer 1 unused."""
    w1 = torch.ones(2, 3)
    w2 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # unit 1 of layer 2 reads only unit 1 of layer 1
    w3 = torch.tensor([[1.0, 0.0]])  # unit 1 of layer 2 is unused
    masks = effective_weight_masks([w1, w2, w3])
    assert masks[2].tolist() == [[True, False]]
    assert masks[1].tolist() == [[True, False], [False, False]]
    assert masks[0].tolist() == [[True] * 3, [False] * 3]


def test_positive_bias_keeps_zero_row_unit_alive():
    """A unit with a zero row but positive bias emits ReLU(b) > 0 and is not dead; with b ≤ 0 it is."""
    w1, w2 = torch.tensor([[0.0, 0.0], [1.0, 1.0]]), torch.ones(1, 2)
    assert effective_weight_masks([w1, w2], [torch.tensor([0.5, 0.0]), None])[1].all()
    assert not effective_weight_masks([w1, w2], [torch.tensor([-0.5, 0.0]), None])[1][0, 0]


@given(st.integers(0, 2**16 - 1), st.floats(0.0, 0.9))
def test_effective_sparsity_bounds_true_sparsity(seed, level):
    """Effective sparsity ≥ true sparsity, masks only remove non-zeros, and the result is a fixed point."""
    gen = torch.Generator().manual_seed(seed)
    weights = [
        torch.randn(5, 4, generator=gen),
        torch.randn(4, 5, generator=gen),
        torch.randn(3, 4, generator=gen),
    ]
    weights = [w * (torch.rand(w.shape, generator=gen) > level) for w in weights]
    masks = effective_weight_masks(weights)
    for w, m in zip(weights, masks, strict=True):
        assert not (m & (w == 0)).any()
    again = effective_weight_masks([w * m for w, m in zip(weights, masks, strict=True)])
    assert all(torch.equal(a, m) for a, m in zip(again, masks, strict=True))


def test_chain_mismatch_and_non_mlp_are_rejected():
    """Shapes that do not chain raise an error naming the weight; a conv model is not a ReLU MLP."""
    with pytest.raises(ValueError, match="weight 1"):
        effective_weight_masks([torch.ones(3, 2), torch.ones(2, 4)])
    assert not is_relu_mlp(nn.Sequential(nn.Conv2d(1, 1, 3)))
    with pytest.raises(ValueError, match="'0'"):
        effective_sparsity(nn.Sequential(nn.Conv2d(1, 1, 3)))

"""Penalty and prox operators of the baselines (spec sfw.md §2.8)."""

import pytest
import torch
from torch import nn

from slimtrain.pruning import group_lasso_penalty, nuclear_norm_penalty, singular_value_soft_threshold_

D = torch.float64


def _net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 3, 2), nn.ReLU(), nn.Conv2d(3, 4, 1), nn.Flatten(), nn.Linear(4, 2)
    ).double()


def test_group_lasso_is_the_sum_of_filter_norms_of_convs_only():
    """λ·Σ_layers Σ_f ‖W_f‖₂ over conv weights (Linear excluded), differentiable."""
    net = _net()
    expected = sum(net[i].weight.flatten(1).norm(dim=1).sum() for i in (0, 2))
    value = group_lasso_penalty(net, 0.1)
    assert value.item() == pytest.approx(0.1 * expected.item(), rel=1e-12)
    value.backward()
    assert net[0].weight.grad is not None and net[4].weight.grad is None


def test_nuclear_penalty_value_and_gradient_u_vt():
    """λ·Σ‖mat(W)‖_* with gradient λ·U·Vᵀ of the thin SVD."""
    net = _net()
    value = nuclear_norm_penalty(net, 0.5)
    w = net[0].weight.detach().flatten(1)
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    total = s.sum() + torch.linalg.svdvals(net[2].weight.detach().flatten(1)).sum()
    assert value.item() == pytest.approx(0.5 * total.item(), rel=1e-12)
    value.backward()
    torch.testing.assert_close(net[0].weight.grad.flatten(1), 0.5 * u @ vh)


def test_soft_thresholding_shrinks_singular_values_exactly():
    """After the prox, σ_i' = max(σ_i − t, 0) for every conv; t = 0 leaves the weights unchanged."""
    net = _net()
    before = [torch.linalg.svdvals(net[i].weight.detach().flatten(1)) for i in (0, 2)]
    w0 = net[0].weight.detach().clone()
    singular_value_soft_threshold_(net, 0.0)
    torch.testing.assert_close(net[0].weight.detach(), w0)
    t = float(before[0].median())
    singular_value_soft_threshold_(net, t)
    for i, s in zip((0, 2), before, strict=True):
        after = torch.linalg.svdvals(net[i].weight.detach().flatten(1))
        torch.testing.assert_close(after, (s - t).clamp_min(0), atol=1e-12, rtol=1e-10)


def test_models_without_convs_are_rejected():
    """The operators name the model when it has no conv layer; negative thresholds are rejected."""
    with pytest.raises(ValueError, match="Linear has no conv"):
        group_lasso_penalty(nn.Linear(2, 2), 1.0)
    with pytest.raises(ValueError, match="threshold"):
        singular_value_soft_threshold_(_net(), -1.0)

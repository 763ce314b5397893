"""A model's frozen parameters (requires_grad=False) are left alone by every method, and reported."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from slimtrain.errors import RunBuildError
from slimtrain.models import register_model
from slimtrain.models.registry import MODELS
from slimtrain.train import recipe_from_dict
from slimtrain.train.trainer import Trainer

from ..reliability.tiny_runs import METHOD_TREES, methods, tiny_tree

# Methods built for the registry's MLP only; they refuse any other model.
REGISTRY_MLP_ONLY = {"nnbcd", "nnbcd-prune", "tt-sgd"}
# Methods that prune channels across layers: a frozen layer on a channel's way is refused.
CHANNEL_PRUNING = {"network-slimming", "swd-structured"}


def _frozen_mlp(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """Flatten → Linear(64, 12) (frozen: 64·12 + 12 entries) → ReLU → Linear(12, 12) → ReLU → Linear."""
    model = nn.Sequential(
        nn.Flatten(),
        nn.Linear(in_channels * image_size**2, 12),
        nn.ReLU(),
        nn.Linear(12, 12),
        nn.ReLU(),
        nn.Linear(12, num_classes),
    )
    model[1].requires_grad_(False)
    return model


def _frozen_cnn(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """Conv(1→4, 3×3, no bias; frozen: 36 entries), BN, ReLU, Conv(4→8), BN, ReLU, pool, Linear(8, 10)."""
    model = nn.Sequential(
        nn.Conv2d(in_channels, 4, 3, padding=1, bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, num_classes),
    )
    model[0].requires_grad_(False)
    return model


# model name → (factory, frozen parameter names, their entries by hand)
FROZEN = {
    "frozen_mlp": (_frozen_mlp, ("1.weight", "1.bias"), 64 * 12 + 12),
    "frozen_cnn": (_frozen_cnn, ("0.weight",), 1 * 4 * 3 * 3),
}


@pytest.fixture
def frozen_models():
    with MODELS.scratch():
        for name, (factory, _, _) in FROZEN.items():
            register_model(name)(factory)
        yield


@pytest.mark.parametrize("method", methods())
def test_every_method_leaves_frozen_parameters_alone(method, frozen_models, tmp_path):
    model = "frozen_cnn" if "model" in METHOD_TREES.get(method, {}) else "frozen_mlp"
    tree = tiny_tree(method, model={"name": model, "kwargs": {}})
    if method in REGISTRY_MLP_ONLY:
        with pytest.raises(RunBuildError, match=r"needs the registry's 'mlp'"):
            Trainer(recipe_from_dict(tree), tmp_path / "run")
        return
    if method in CHANNEL_PRUNING:
        # The reference channel model refuses it; the default's DepGraph groups do not reach the frozen first
        # conv (its output carries no gradient), which is then left alone like any frozen layer.
        options = {**tree["method"].get("options", {}), "channel_model": "reference"}
        reference = {**tree, "method": {**tree["method"], "options": options}}
        with pytest.raises(RunBuildError, match=r"layer '0' \(Conv2d\).*frozen"):
            Trainer(recipe_from_dict(reference), tmp_path / "reference")
        # Target 0.9 is out of reach for this tiny model's one gated group.
        tree = {
            **tree,
            "method": {**tree["method"], "options": {**options, "channel_model": "groups", "target": 0.5}},
        }
    _, names, entries = FROZEN[model]
    trainer = Trainer(recipe_from_dict(tree), tmp_path / "run")
    initial = {n: p.detach().clone() for n, p in trainer.components.model.named_parameters()}
    results = trainer.fit()
    final = dict(trainer.components.model.named_parameters())
    for name in names:
        assert name in final, f"{method} replaced the frozen layer"
        assert torch.equal(final[name], initial[name]), f"{method} changed the frozen {name}"
        assert not final[name].requires_grad
    assert results["params_frozen"] == entries

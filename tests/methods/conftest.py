"""Small recipes shared by the method tests: digits, a tiny MLP and a tiny gated ResNet-8."""

import pytest

from slimtrain.train.config import recipe_from_dict

_MLP = {
    "data": {"name": "digits", "val_fraction": 0.2},
    "model": {"name": "mlp", "kwargs": {"widths": [32]}},
    "optimizer": {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4},
    "schedule": {"name": "cosine"},
    "train": {"epochs": 2, "batch_size": 64, "progress": False, "checkpoint_every_steps": 7},
}
_RESNET = {
    **_MLP,
    "model": {"name": "resnet8", "kwargs": {"width": 4, "bn_after_add": True, "shortcut": "B"}},
    "train": {"epochs": 1, "batch_size": 64, "progress": False, "max_steps": 6},
}


@pytest.fixture
def trees():
    """Recipe trees by model: ``"mlp"`` (2 epochs) and ``"resnet"`` (BatchNorm after every add, 6 steps)."""
    return {"mlp": _MLP, "resnet": _RESNET}


@pytest.fixture
def method_recipe():
    """``method_recipe(tree, method, **options)``: the tree as a recipe named after the method."""

    def build(tree, method, **options):
        return recipe_from_dict({**tree, "name": method, "method": {"name": method, "options": options}})

    return build

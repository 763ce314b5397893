"""Every shipped recipe (configs/ and the demo recipes) validates against the recipe schema."""

from pathlib import Path

import pytest

from slimtrain.cli import demo_recipes
from slimtrain.train.config import load_recipe

ROOT = Path(__file__).resolve().parent.parent
RECIPES = sorted((ROOT / "configs").rglob("*.yaml")) + demo_recipes()


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_recipe_validates(path):
    """The recipe loads without error and names a registered method, model and dataset."""
    from slimtrain.data import list_datasets
    from slimtrain.models import list_models

    recipe = load_recipe(path)
    assert recipe.model.name in list_models()
    assert recipe.data.name in list_datasets()


def test_there_are_recipes():
    """The parametrization above is not empty (a moved folder would otherwise pass silently)."""
    assert len(RECIPES) >= 4

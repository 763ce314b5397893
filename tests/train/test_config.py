"""Recipe validation: good recipes load with every default resolved, bad ones are refused naming the key."""

import pytest
import yaml

from slimtrain.errors import RecipeError
from slimtrain.train.config import Recipe, load_recipe, recipe_from_dict


def test_defaults_resolve_and_round_trip(tmp_path):
    """A minimal recipe validates, and its resolved YAML loads back to an equal recipe."""
    recipe = recipe_from_dict({"name": "r", "train": {"epochs": 2}})
    path = tmp_path / "r.yaml"
    path.write_text(recipe.to_yaml())
    assert load_recipe(path) == recipe
    assert recipe.train.epochs == 2 and recipe.optimizer.name == "sgd"


def test_name_defaults_to_file_stem(tmp_path):
    """A recipe without a name is named after its file."""
    path = tmp_path / "my-run.yaml"
    path.write_text("train: {epochs: 1}\n")
    assert load_recipe(path).name == "my-run"


@pytest.mark.parametrize(
    ("tree", "needle"),
    [
        ({"trian": {}}, "unknown key 'trian'; valid keys here: data, evaluation"),
        ({"train": {"epoch": 3}}, "unknown key 'train.epoch'; valid keys here: batch_size"),
        ({"train": {"epochs": "many"}}, "'train.epochs'"),
        ({"train": {"epochs": 0}}, "'train.epochs': Input should be greater than or equal to 1"),
        ({"optimizer": {"name": "lion"}}, "'optimizer.name'"),
        ({"optimizer": {"momentum": 1.5}}, "'optimizer.momentum'"),
        ({"evaluation": {"levels": [0.5, 1.2]}}, "'evaluation.levels': levels are fractions in [0, 1)"),
        ({"schedule": {"milestones": [5, 2]}}, "'schedule.milestones'"),
        ({"method": {"name": "nope"}}, "unknown method 'nope'; registered: dense"),
        ({"method": {"name": "dense", "options": {"x": 1}}}, "unknown key 'method.options.x'"),
    ],
)
def test_invalid_recipes_name_the_key(tree, needle):
    """Every invalid value or unknown key is rejected with a message naming exactly that key."""
    with pytest.raises(RecipeError) as err:
        recipe_from_dict(tree)
    assert needle in str(err.value)


def test_overrides_are_parsed_as_yaml_and_validated():
    """``--set`` overrides reach nested keys with YAML typing, and a bad override names its key."""
    recipe = recipe_from_dict(
        {}, ["optimizer.lr=0.05", "evaluation.levels=[0.1, 0.2]", "train.progress=false"]
    )
    assert recipe.optimizer.lr == 0.05 and recipe.evaluation.levels == [0.1, 0.2]
    assert recipe.train.progress is False
    with pytest.raises(RecipeError, match=r"'optimizer\.lr'"):
        recipe_from_dict({}, ["optimizer.lr=-1"])
    with pytest.raises(RecipeError, match="not of the form key=value"):
        recipe_from_dict({}, ["optimizer.lr"])


def test_missing_and_malformed_files(tmp_path):
    """A missing file, invalid YAML and a non-mapping document each give a RecipeError naming the file."""
    with pytest.raises(RecipeError, match="not found"):
        load_recipe(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {epochs: [\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(bad)
    listing = tmp_path / "list.yaml"
    listing.write_text(yaml.safe_dump([1, 2]))
    with pytest.raises(RecipeError, match="must be a mapping"):
        load_recipe(listing)


def test_resolved_recipe_lists_every_section():
    """The saved recipe is fully resolved: every section and default appears in the YAML."""
    tree = yaml.safe_load(Recipe().to_yaml())
    assert set(tree) == set(Recipe.model_fields)
    assert "weight_decay" in tree["optimizer"] and "structure" in tree["evaluation"]

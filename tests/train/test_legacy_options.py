"""A run stored before an option whose default later changed is read back with what it was trained with."""

from __future__ import annotations

import pytest
import yaml

from slimtrain.errors import RecipeError
from slimtrain.train.config import load_stored_recipe, recipe_from_dict
from slimtrain.train.trainer import check_resumable

TREE = {
    "model": {"name": "resnet8", "kwargs": {"width": 4, "shortcut": "B"}},
    "method": {"name": "swd-structured", "options": {"target": 0.5}},
}


def _stored_before_channel_model(run_dir):
    """The recipe.yaml such a run wrote: every option resolved, but no channel_model yet."""
    tree = recipe_from_dict(TREE).model_dump(mode="json")
    del tree["method"]["options"]["channel_model"]
    run_dir.mkdir()
    (run_dir / "recipe.yaml").write_text(yaml.safe_dump(tree))
    return run_dir


def test_a_run_stored_before_channel_model_is_read_with_the_tracer_gates(tmp_path):
    run_dir = _stored_before_channel_model(tmp_path / "run")
    assert load_stored_recipe(run_dir / "recipe.yaml").method.options["channel_model"] == "reference"
    assert recipe_from_dict(TREE).method.options["channel_model"] == "groups"  # new recipes: the default


def test_resuming_it_with_the_new_default_is_refused_naming_the_option(tmp_path):
    run_dir = _stored_before_channel_model(tmp_path / "run")
    changed = r"method\.options.*'channel_model': 'reference'\} → .*'channel_model': 'groups'"
    with pytest.raises(RecipeError, match=changed):
        check_resumable(run_dir, recipe_from_dict(TREE))
    faithful = {
        **TREE,
        "method": {**TREE["method"], "options": {"target": 0.5, "channel_model": "reference"}},
    }
    check_resumable(run_dir, recipe_from_dict(faithful))

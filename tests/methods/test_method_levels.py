"""Every built-in method declares the compression levels it produces, per structure."""

import pytest

from slimtrain.train.config import recipe_from_dict
from slimtrain.train.method import Levels, get_method_class, list_methods

STRUCTURES = ("unstructured", "filter", "lowrank", "native")


def _method(name, **options):
    recipe = recipe_from_dict(
        {"method": {"name": name, "options": options}, "optimizer": {"weight_decay": 0.0}}
    )
    return get_method_class(name)(recipe.method_options(), recipe)


def test_the_two_kinds_of_declaration():
    """Chosen after training admits every level in [0, 1); set by training only its native values."""
    after = Levels.after_training()
    assert after.chosen_after_training and after.values == () and after.option is None
    assert after.admits(0.0) and after.admits(0.99) and not after.admits(1.0) and not after.admits(-0.1)
    native = Levels.set_by_training((0.3,), option="tau")
    assert not native.chosen_after_training and native.values == (0.3,) and native.option == "tau"
    assert native.admits(0.3) and not native.admits(0.5)


@pytest.mark.parametrize("name", list_methods())
def test_every_method_declares_its_levels(name):
    """A method choosing its level after training produces any level of its structures and level 0 of
    ``native``; a method fixing it during training produces, for ``native`` and its structures, only the
    value of its level option. Any other structure is declared impossible (``None``).
    """
    method = _method(name)
    declared = {structure: method.levels(structure) for structure in STRUCTURES}
    assert declared["native"] is not None
    for structure, levels in declared.items():
        if structure != "native":
            assert (levels is not None) == (structure in method.structures), structure
    if method.levels_chosen == "after_training":
        assert method.structures and method.level_option is None
        assert declared["native"] == Levels.set_by_training((0.0,))
        assert all(declared[s] == Levels.after_training() for s in method.structures)
    else:
        value = getattr(method.options, method.level_option)
        expected = Levels.set_by_training((value,), option=method.level_option)
        assert declared["native"] == expected
        assert all(declared[s] == expected for s in method.structures)


@pytest.mark.parametrize(
    ("name", "options", "values"),
    [
        ("tdlrt", {"tau": 0.25}, (0.25,)),
        ("swd", {"target": 0.8}, (0.8,)),
        ("fixed-rank", {"rank_fraction": 0.5}, (0.5,)),
        ("tt-sgd", {"rank": 3}, ()),  # set through `rank`, not the level option
    ],
)
def test_native_values_follow_the_options(name, options, values):
    """The native values are the trained run's own option values."""
    assert _method(name, **options).levels("native").values == values

"""The one registry idiom: registration, lookups that name the known entries, entry-point plugins."""

from importlib import metadata

import pytest

from slimtrain.errors import BadInputError
from slimtrain.registry import Registry


def test_register_get_and_refuse_a_taken_name():
    """Decorator and direct forms register; the same object twice is fine, another one needs replace=True."""
    shapes = Registry("shape")

    @shapes.register("square")
    def square(side):
        return side * side

    assert shapes.get("square") is square and shapes.names() == ["square"] and "square" in shapes
    assert shapes.register("square", square) is square
    with pytest.raises(ValueError, match="already registered"):
        shapes.register("square", len)
    shapes.register("square", len, replace=True)
    assert shapes.get("square") is len
    with pytest.raises(ValueError, match="non-empty"):
        shapes.register("", len)


def test_unknown_name_is_bad_input_listing_the_entries():
    """A missing name raises a BadInputError (and KeyError) naming the kind, the name and the entries."""
    shapes = Registry("shape")
    shapes.register("circle", object())
    with pytest.raises(BadInputError) as info:
        shapes.get("triangle")
    assert isinstance(info.value, KeyError)
    assert str(info.value) == "unknown shape 'triangle'; registered: circle"


def test_entry_points_are_loaded_on_a_miss(monkeypatch):
    """Entries of the registry's entry-point group are loaded once, when a name is not registered here."""
    loads = []

    class FakeEntryPoint:
        name = "plugin"

        def load(self):
            loads.append(1)
            return "loaded"

    def entry_points(group):
        return [FakeEntryPoint()] if group == "slimtrain.test_plugins" else []

    monkeypatch.setattr(metadata, "entry_points", entry_points)
    plugins = Registry("plugin", entry_point_group="slimtrain.test_plugins")
    plugins.register("builtin", "here")
    assert plugins.get("builtin") == "here" and loads == []
    assert plugins.get("plugin") == "loaded" and plugins.names() == ["builtin", "plugin"]
    assert loads == [1]


def test_temporarily_and_scratch_undo_their_registrations():
    """temporarily() restores the previous entry (or removes the name); scratch() undoes everything inside."""
    shapes = Registry("shape")
    shapes.register("circle", "round")
    with shapes.temporarily("circle", "oval"):
        assert shapes.get("circle") == "oval"
    with shapes.temporarily("square", "boxy"):
        assert "square" in shapes
    assert shapes.get("circle") == "round" and shapes.names() == ["circle"]
    with shapes.scratch():
        shapes.register("triangle", "pointy")
        shapes.register("circle", "oval", replace=True)
    assert shapes.names() == ["circle"] and shapes.get("circle") == "round"

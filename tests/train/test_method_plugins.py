"""The method plugin interface: the engine imports no plugin; methods are entry points of one registry."""

import ast
from importlib import metadata
from pathlib import Path

import pytest

import slimtrain.train.method as method_module
from slimtrain.errors import RecipeError, UnknownNameError
from slimtrain.train.config import recipe_from_dict
from slimtrain.train.method import (
    ENTRY_POINT_GROUP,
    Method,
    get_method_class,
    list_methods,
    register_method,
)

ENGINE = Path(method_module.__file__).parent
PLUGINS = "slimtrain.methods"


def _imported_modules(path: Path) -> list[tuple[int, str]]:
    """Every module ``path`` imports, anywhere in the file (functions included), as absolute names."""
    package = "slimtrain.train"  # every scanned file is a module of this package
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this package
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found += [(node.lineno, module)] + [(node.lineno, f"{module}.{a.name}") for a in node.names]
        elif (
            isinstance(node, ast.Call)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) in ("import_module", "__import__")
        ):
            found.append((node.lineno, node.args[0].value))
    return found


def test_the_engine_imports_no_plugin():
    """No module of slimtrain.train imports slimtrain.methods, at module level or inside a function."""
    files = sorted(ENGINE.rglob("*.py"))
    assert ENGINE / "trainer.py" in files and ENGINE / "method.py" in files
    offending = [
        f"{path.relative_to(ENGINE.parent)}:{line}: {name}"
        for path in files
        for line, name in _imported_modules(path)
        if name == PLUGINS or name.startswith(PLUGINS + ".")
    ]
    assert not offending, offending


def test_the_scan_sees_every_form_of_import(tmp_path):
    """The scan catches the lazy import the engine used to hide its cycle behind, and the other forms."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "def load():\n"
        "    import slimtrain.methods\n"
        "    from slimtrain.methods.dense import DenseTraining\n"
        "    from .. import methods\n"
        "    importlib.import_module('slimtrain.methods.tdlrt')\n"
    )
    names = [name for _, name in _imported_modules(probe)]
    hits = [n for n in names if n == PLUGINS or n.startswith(PLUGINS + ".")]
    assert hits == [
        "slimtrain.methods",
        "slimtrain.methods.dense",
        "slimtrain.methods.dense.DenseTraining",
        "slimtrain.methods",
        "slimtrain.methods.tdlrt",
    ]


def _entry_points() -> dict[str, metadata.EntryPoint]:
    return {entry.name: entry for entry in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def test_builtin_methods_are_all_entry_points():
    """The registry's names are exactly the entry points of the group (no method registered another way)."""
    assert sorted(_entry_points()) == list_methods()
    assert "dense" in list_methods() and "tdlrt" in list_methods()


@pytest.mark.parametrize("name", list_methods())
def test_every_entry_point_loads_its_method(name):
    """Each entry point loads a Method subclass named like the entry point, the class the registry returns."""
    entry = _entry_points()[name]
    cls = entry.load()
    assert isinstance(cls, type) and issubclass(cls, Method)
    assert cls.name == name
    assert get_method_class(name) is cls


def test_unknown_method_is_an_unknown_name_the_recipe_names():
    """An unknown name raises UnknownNameError (a KeyError) listing the methods; a recipe names its key."""
    with pytest.raises(UnknownNameError) as info:
        get_method_class("nope")
    assert isinstance(info.value, KeyError)
    assert str(info.value) == f"unknown method 'nope'; registered: {', '.join(list_methods())}"
    with pytest.raises(RecipeError, match=r"'method\.name': unknown method 'nope'"):
        recipe_from_dict({"method": {"name": "nope"}})


@pytest.fixture
def isolated_registry():
    """Registrations made by the test are undone afterwards (entry points are loaded first)."""
    with method_module.METHODS.scratch() as registry:
        yield registry


def test_register_method_in_process(isolated_registry):
    """A method defined in-process registers under its name; a clash or a non-method is refused."""

    class Mine(Method):
        name = "test-mine"

    assert register_method(Mine) is Mine
    assert get_method_class("test-mine") is Mine and "test-mine" in list_methods()
    assert register_method(Mine) is Mine  # the same class again (a re-import) is fine

    class Clash(Method):
        name = "dense"

    with pytest.raises(ValueError, match="already registered"):
        register_method(Clash)
    with pytest.raises(ValueError, match="non-empty"):
        register_method(type("Nameless", (Method,), {}))
    with pytest.raises(TypeError, match="Method subclass"):
        register_method(object)

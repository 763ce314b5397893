"""The public Python surface: light imports, lazy exports that resolve, no import cycles."""

import importlib
import subprocess
import sys

import pytest

PACKAGES = ("slimtrain", "slimtrain.train", "slimtrain.experiments")


def _run(code: str) -> None:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_import_slimtrain_does_not_import_torch():
    """`import slimtrain` stays light: no torch until an entry point is used."""
    _run("import slimtrain, sys; assert 'torch' not in sys.modules, 'torch imported'")


def test_importing_one_engine_module_imports_nothing_else_of_the_engine():
    """`import slimtrain.train.config` does not pull in the trainer, the methods or the experiments."""
    _run(
        "import slimtrain.train.config, sys\n"
        "loaded = [m for m in ('slimtrain.train.trainer', 'slimtrain.train.method', 'slimtrain.methods',"
        " 'slimtrain.experiments') if m in sys.modules]\n"
        "assert not loaded, loaded"
    )


@pytest.mark.parametrize("package", PACKAGES)
def test_every_exported_name_resolves(package):
    """Each name in `__all__` resolves (lazily) to a defined object, listed by `dir()`."""
    module = importlib.import_module(package)
    assert module.__all__ == sorted(set(module.__all__))
    for name in module.__all__:
        value = getattr(module, name)
        assert value is not None and not isinstance(value, type(sys)), name
        assert name in dir(module)
    with pytest.raises(AttributeError):
        module.no_such_name  # noqa: B018


@pytest.mark.parametrize("package", PACKAGES)
def test_each_package_resolves_its_names_in_a_fresh_process(package):
    """Resolving every export first thing in a fresh process hits no import cycle."""
    _run(f"import {package} as p\nfor n in p.__all__: getattr(p, n)")


def test_main_entry_points_are_the_engine_and_experiment_functions():
    """The top-level names are the very objects of the subpackages."""
    import slimtrain
    from slimtrain.experiments.comparison import compare
    from slimtrain.experiments.exporting import export_run
    from slimtrain.experiments.report import write_report
    from slimtrain.experiments.sweeping import sweep
    from slimtrain.train.config import load_recipe
    from slimtrain.train.trainer import Trainer, train

    assert slimtrain.sweep is sweep and slimtrain.compare is compare and slimtrain.export_run is export_run
    assert slimtrain.write_report is write_report and slimtrain.Trainer is Trainer
    assert slimtrain.load_recipe is load_recipe and callable(slimtrain.load)
    assert slimtrain.train.train is train  # `slimtrain.train` is the engine package


def test_experiment_functions_are_not_shadowed_by_their_modules():
    """Importing the defining modules first leaves ``slimtrain.experiments.sweep`` etc. the functions."""
    _run(
        "import types\n"
        "from slimtrain.experiments.sweeping import load_trained\n"
        "import slimtrain.experiments.comparison, slimtrain.experiments.exporting\n"
        "import slimtrain.experiments as e\n"
        "for name in ('sweep', 'compare', 'export_run'):\n"
        "    assert callable(getattr(e, name)) and not isinstance(getattr(e, name), types.ModuleType)\n"
        "assert e.load_trained is load_trained"
    )

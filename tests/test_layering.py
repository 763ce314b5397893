"""Data flows one way: the lower packages never import the method packages, lazily or not (docs/design)."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import slimtrain

SRC = Path(slimtrain.__file__).parent
METHOD_PACKAGES = ("fw", "lowrank", "bcd", "swd", "methods", "train", "experiments")
# Lower packages and modules, each of which must import none of the method packages.
LOWER = (
    "errors.py",
    "registry.py",
    "_deprecation.py",
    "_model_io.py",
    "_shared_params.py",
    "_wrappers.py",
    "io",
    "algebra",
    "data",
    "models",
    "layers",
    "metrics",
    "compress",
)


def _imported_modules(path: Path) -> set[str]:
    """Every module an ``import`` statement anywhere in the file names (inside functions too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("lower", LOWER)
def test_lower_package_never_imports_a_method_package(lower):
    """No import of slimtrain.{fw, lowrank, bcd, swd, methods, train, experiments} in the lower packages."""
    root = SRC / lower
    files = [root] if root.is_file() else sorted(root.rglob("*.py"))
    offending = [
        f"{path.relative_to(SRC)}: {name}"
        for path in files
        for name in _imported_modules(path)
        if name.split(".")[:2] in (["slimtrain", p] for p in METHOD_PACKAGES)
    ]
    assert offending == []


def test_importing_compress_loads_no_method_package():
    """`import slimtrain.compress` (and the layers it exports with) loads none of the method packages."""
    code = (
        "import sys, slimtrain.compress, slimtrain.layers\n"
        f"packages = [['slimtrain', p] for p in {METHOD_PACKAGES!r}]\n"
        "print(sorted(m for m in sys.modules if m.split('.')[:2] in packages))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"

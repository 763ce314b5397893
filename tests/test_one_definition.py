"""One concept, one name: no public name is defined (def, class or assignment) in two modules of slimtrain."""

import ast
from collections import defaultdict
from pathlib import Path

import slimtrain

SRC = Path(slimtrain.__file__).parent
# Module-level names every module may define for itself.
PER_MODULE = {"__all__", "__getattr__", "__version__", "T", "logger"}


def _public_definitions(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {n for n in names if not n.startswith("_") and n not in PER_MODULE}


def test_no_public_name_is_defined_in_two_modules():
    """Every public name has one defining module (re-exports by import are fine)."""
    where: dict[str, list[str]] = defaultdict(list)
    for path in sorted(SRC.rglob("*.py")):
        for name in _public_definitions(ast.parse(path.read_text())):
            where[name].append(str(path.relative_to(SRC)))
    duplicated = {name: modules for name, modules in where.items() if len(modules) > 1}
    assert duplicated == {}

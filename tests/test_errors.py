"""One error base: every deliberate error is a SlimtrainError; the CLI maps its two families to 2 and 1."""

import ast
from pathlib import Path

import pytest

import slimtrain.errors as errors
from slimtrain import cli

SRC = Path(errors.__file__).parent
ERROR_CLASSES = [getattr(errors, name) for name in errors.__all__]


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__name__)
def test_every_error_has_the_base_and_one_family(cls):
    """Each class derives from SlimtrainError and (the bases aside) from exactly one family."""
    assert issubclass(cls, errors.SlimtrainError)
    if cls not in (errors.SlimtrainError, errors.BadInputError, errors.WorkFailedError):
        assert issubclass(cls, errors.BadInputError) != issubclass(cls, errors.WorkFailedError)


@pytest.mark.parametrize(
    "cls", [c for c in ERROR_CLASSES if c is not errors.SlimtrainError], ids=lambda c: c.__name__
)
def test_cli_exit_code_follows_the_family(cls, monkeypatch, capsys):
    """A command raising the error exits 2 for bad input and 1 for failed work, with its message, no trace."""

    def command(args):
        raise cls("the culprit is named here")

    parser = cli.build_parser()
    args = parser.parse_args(["report", "somewhere"])
    args.func = command
    monkeypatch.setattr(cli, "build_parser", lambda: type("P", (), {"parse_args": lambda self, argv: args})())
    expected = cli.EXIT_BAD_INPUT if issubclass(cls, errors.BadInputError) else cli.EXIT_FAILED
    assert cli.main(["report", "somewhere"]) == expected
    err = capsys.readouterr().err
    assert "the culprit is named here" in err and "Traceback" not in err


def test_no_error_class_is_defined_outside_the_errors_module():
    """Exception classes live in slimtrain.errors only (warnings, which are not errors, may live anywhere)."""
    defined = []
    for path in SRC.rglob("*.py"):
        if path.name == "errors.py" and path.parent == SRC:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(
                isinstance(b, ast.Name)
                and (b.id.endswith(("Error", "Exception")) or b.id == "TrainingDiverged")
                for b in node.bases
            ):
                defined.append(f"{path.relative_to(SRC)}:{node.name}")
    assert defined == []

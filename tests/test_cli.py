"""The command line: commands run end to end and exit codes distinguish bad input from failed work."""

import argparse

import pytest
import yaml

import slimtrain
from slimtrain.cli import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, LISTS, build_parser, main

TREE = {
    "data": {"name": "digits"},
    "model": {"name": "mlp", "kwargs": {"widths": [16]}},
    "train": {"epochs": 1, "batch_size": 128, "progress": False},
    "evaluation": {"levels": [0.0, 0.9]},
}


def _write(tmp_path, tree, name="r"):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def test_train_sweep_report(tmp_path, capsys):
    """Train → sweep → report succeed with exit code 0 and print the run's numbers."""
    recipe = _write(tmp_path, {**TREE, "output_dir": str(tmp_path / "runs")})
    assert main(["train", str(recipe)]) == EXIT_OK
    run = tmp_path / "runs" / "r"
    assert main(["sweep", str(run)]) == EXIT_OK
    assert main(["report", str(run)]) == EXIT_OK
    assert main(["select", str(run), "--max-drop", "1"]) == EXIT_OK  # every level is within a drop of 1
    out = capsys.readouterr().out
    assert "test accuracy" in out and "report.md" in out and "sparsity 0.9" in out
    assert (run / "report.html").exists()


def test_bad_recipe_exits_2_naming_the_key(tmp_path, capsys):
    """An unknown key exits with code 2 and names the key on stderr, before any training."""
    recipe = _write(tmp_path, {**TREE, "train": {"epochz": 1}})
    assert main(["train", str(recipe)]) == EXIT_BAD_INPUT
    assert "train.epochz" in capsys.readouterr().err
    assert main(["train", str(recipe), "--set", "optimizer.lr=abc"]) == EXIT_BAD_INPUT


def test_sweep_of_unfinished_run_exits_1(tmp_path, capsys):
    """Sweeping a run without a final checkpoint fails with code 1 and says what to do."""
    recipe = _write(tmp_path, {**TREE, "output_dir": str(tmp_path / "runs")})
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    (run / "recipe.yaml").write_text(recipe.read_text())
    assert main(["sweep", str(run)]) == EXIT_FAILED
    assert "no final checkpoint" in capsys.readouterr().err


def test_version(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"slimtrain {slimtrain.__version__}"


def _registered(kind):
    from slimtrain.compress.standard import STRUCTURES
    from slimtrain.data.registry import DATASETS
    from slimtrain.fw.base import CONSTRAINT_SETS
    from slimtrain.models.registry import MODELS
    from slimtrain.train.method import METHODS

    registries = {"models": MODELS, "methods": METHODS, "datasets": DATASETS, "constraints": CONSTRAINT_SETS}
    return list(STRUCTURES) if kind == "structures" else registries[kind].names()


@pytest.mark.parametrize("kind", list(LISTS))
def test_list_prints_one_plain_line_per_registered_name(kind, capsys):
    """Every registered name, once, on its own line with a description free of reST markup."""
    assert main(["list", kind]) == EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == _registered(kind)
    for line in lines:
        description = line.split(maxsplit=1)[1]
        assert len(description) > 10 and "``" not in description and ":class:" not in description


def _subcommands():
    parser = build_parser()
    (actions,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return parser, actions.choices


def test_help_is_plain_text_with_examples():
    """No reST markup in any help; the top level and every command show examples of themselves."""
    parser, commands = _subcommands()
    assert "slimtrain list methods" in parser.format_help()
    for name, command in [("", parser), *commands.items()]:
        text = command.format_help()
        assert "``" not in text and ":class:" not in text and ":func:" not in text, name
        examples = text.split("example", 1)[1]
        assert f"\n  slimtrain {name}".rstrip() in examples, name


@pytest.mark.parametrize("command", list(_subcommands()[1]))
def test_every_argument_has_help(command):
    parser = _subcommands()[1][command]
    missing = [a.dest for a in parser._actions if not a.help]
    assert missing == []

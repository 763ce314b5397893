"""The command line: commands run end to end and exit codes distinguish bad input from failed work."""

import yaml

from slimtrain.cli import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, main

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
    out = capsys.readouterr().out
    assert "test accuracy" in out and "report.md" in out
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

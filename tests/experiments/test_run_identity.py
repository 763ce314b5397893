"""Results belong to the model on disk: one run identity keys results.json, sweep rows and compare reuse."""

import json

import pytest
import yaml

from slimtrain.cli import EXIT_BAD_INPUT, EXIT_OK, main
from slimtrain.experiments.comparison import compare
from slimtrain.experiments.sweeping import sweep, sweep_path


def run_identity(run_dir):
    """The run identity recomputed from the directory (imported here: older versions lack the module)."""
    from slimtrain.train.identity import run_identity as identity

    return identity(run_dir)


TREE = {
    "name": "dense",
    "data": {"name": "digits", "val_fraction": 0.2},
    "model": {"name": "mlp", "kwargs": {"widths": [32]}},
    "optimizer": {"lr": 0.1},
    "train": {"epochs": 2, "batch_size": 64, "progress": False, "tensorboard": True},
    "evaluation": {"structure": "unstructured", "levels": [0.0, 0.5]},
}


def _recipe(directory, tree=TREE, name="dense"):
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**tree, "name": name, "output_dir": str(directory / "runs")}))
    return path


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished dense run trained through the CLI: ``(recipe path, run directory)``."""
    root = tmp_path_factory.mktemp("identity")
    recipe = _recipe(root)
    assert main(["train", str(recipe)]) == EXIT_OK
    return recipe, root / "runs" / "dense"


def test_results_and_rows_record_the_run_identity(finished):
    """results.json holds the identity recomputed from the directory (recipe digest + final checkpoint
    SHA-256 of the manifest), and every sweep row and the sweep file carry it.
    """
    _, run = finished
    identity = run_identity(run)
    results = json.loads((run / "results.json").read_text())
    manifest = json.loads((run / "checkpoints" / "manifest.json").read_text())
    (final,) = [e for e in manifest["checkpoints"] if e["final"]]
    assert results["run_identity"] == identity.digest
    assert results["final_checkpoint_sha256"] == final["sha256"] == identity.checkpoint_sha256
    assert results["recipe_digest"] == identity.recipe_digest
    rows = sweep(run, levels=[0.5])
    assert [r["run_identity"] for r in rows] == [identity.digest]
    assert json.loads(sweep_path(run, "unstructured").read_text())["run_identity"] == identity.digest


def test_train_into_a_finished_run_exits_2_and_keeps_it(finished, capsys):
    """Training again into a finished run's directory without --overwrite is refused (exit 2) naming the
    directory; nothing of the finished run changes.
    """
    recipe, run = finished
    before = {p.name: p.read_bytes() for p in (run / "results.json", run / "recipe.yaml")}
    capsys.readouterr()
    assert main(["train", str(recipe), "--set", "optimizer.lr=0.01"]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert str(run) in err and "--overwrite" in err
    assert {p.name: p.read_bytes() for p in (run / "results.json", run / "recipe.yaml")} == before


def test_sweep_latency_after_a_plain_sweep_measures_latency(finished):
    """`sweep --latency` after `sweep` recomputes the rows with the new settings instead of returning the
    stored rows without latency; the file keeps one row per level.
    """
    _, run = finished
    (plain,) = sweep(run, levels=[0.5])
    assert "latency_ms_b1" not in plain
    (timed,) = sweep(run, levels=[0.5], latency=True, latency_batch_sizes=(1,))
    assert timed["latency_ms_b1"] > 0
    assert timed["evaluation_settings"]["latency_batch_sizes"] == [1]
    stored = json.loads(sweep_path(run, "unstructured").read_text())["rows"]
    assert [r["requested_level"] for r in stored].count(0.5) == 1
    (again,) = sweep(run, levels=[0.5], latency=True, latency_batch_sizes=(1,))
    assert again["latency_ms_b1"] == timed["latency_ms_b1"]  # same key: reused


def test_rows_of_another_identity_are_recomputed(finished):
    """A sweep file whose identity is not the run's (another training, or a file from before identities)
    is not reused: its rows are recomputed and the file replaced.
    """
    _, run = finished
    sweep(run, levels=[0.0])
    path = sweep_path(run, "unstructured")
    data = json.loads(path.read_text())
    for row in data["rows"]:
        row["acc_compressed_no_ft"] = 0.123
    data["run_identity"] = "0" * 64
    path.write_text(json.dumps(data))
    (row,) = sweep(run, levels=[0.0])
    assert row["acc_compressed_no_ft"] == pytest.approx(row["acc_dense"])
    assert json.loads(path.read_text())["run_identity"] == run_identity(run).digest


def test_overwrite_retrains_and_removes_the_old_runs_outputs(tmp_path, capsys):
    """The issue's case: a run retrained at another learning rate reported the old sweep's accuracy.
    `train --overwrite` deletes the old run's sweeps, reports, plots, exports and TensorBoard events before
    training; the next sweep reports the new model (level 0 = its test accuracy).
    """
    recipe = _recipe(tmp_path)
    run = tmp_path / "runs" / "dense"
    assert main(["train", str(recipe)]) == EXIT_OK
    assert main(["sweep", str(run)]) == EXIT_OK
    assert main(["report", str(run)]) == EXIT_OK
    assert main(["export", str(run), "--level", "0.5", "--latency-batch-sizes"]) == EXIT_OK
    old = json.loads((run / "results.json").read_text())
    events = set((run / "tensorboard").glob("events.out.tfevents.*"))
    assert events and list(run.glob("accuracy_vs_*.png")) and (run / "exported").is_dir()

    capsys.readouterr()
    args = ["train", str(recipe), "--set", "optimizer.lr=0.01", "--overwrite"]
    assert main(args) == EXIT_OK
    new = json.loads((run / "results.json").read_text())
    assert new["run_identity"] != old["run_identity"]
    assert new["test_accuracy"] != old["test_accuracy"]
    assert not list(run.glob("sweep-*.json")) and not list(run.glob("report.*"))
    assert not list(run.glob("accuracy_vs_*.png")) and not (run / "exported").exists()
    assert not events & set((run / "tensorboard").glob("events.out.tfevents.*"))
    rows = sweep(run)
    assert rows[0]["requested_level"] == 0.0
    assert rows[0]["acc_compressed_no_ft"] == pytest.approx(new["test_accuracy"])
    assert all(r["run_identity"] == new["run_identity"] for r in rows)


def test_overwrite_and_resume_are_exclusive(finished, capsys):
    """--overwrite deletes a run, --resume keeps it: asking for both is an argument error (exit 2)."""
    recipe, _ = finished
    with pytest.raises(SystemExit) as stop:
        main(["train", str(recipe), "--resume", "--overwrite"])
    assert stop.value.code == EXIT_BAD_INPUT


BN_TREE = {
    "name": "bn",
    "data": {"name": "digits", "val_fraction": 0.2},
    "model": {"name": "resnet8", "kwargs": {"width": 4}},
    "optimizer": {"lr": 0.05},
    "train": {"epochs": 1, "batch_size": 64, "max_steps": 4, "progress": False, "tensorboard": False},
    "evaluation": {"structure": "unstructured", "levels": [0.5]},
}


def test_compare_recomputes_rows_when_bn_recalibration_is_toggled(tmp_path):
    """`compare` reuses the finished run, but not its sweep rows computed without BatchNorm
    recalibration: with `evaluation.bn_recalibration=true` the rows carry the recalibrated accuracy.
    """
    path = tmp_path / "bn.yaml"
    path.write_text(yaml.safe_dump(BN_TREE))
    first = compare([path], tmp_path / "cmp", seeds=[0])
    (row,) = first["rows"]
    assert "acc_compressed_bn_recal" not in row
    checkpoint = (tmp_path / "cmp" / "bn" / "seed0" / "checkpoints" / "final.pt").read_bytes()
    second = compare([path], tmp_path / "cmp", seeds=[0], overrides=["evaluation.bn_recalibration=true"])
    (row,) = second["rows"]
    assert 0.0 <= row["acc_compressed_bn_recal"] <= 1.0
    assert row["evaluation_settings"]["bn_recalibration"] is True
    assert row["run_identity"] == first["rows"][0]["run_identity"]  # the same training, reused
    assert (tmp_path / "cmp" / "bn" / "seed0" / "checkpoints" / "final.pt").read_bytes() == checkpoint

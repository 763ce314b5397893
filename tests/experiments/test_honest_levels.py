"""Sweep, export and compare refuse levels and structures a run does not produce, and say what it does."""

import json

import pytest
import yaml

from slimtrain.cli import EXIT_BAD_INPUT, EXIT_OK, main
from slimtrain.errors import BadInputError
from slimtrain.experiments.comparison import compare
from slimtrain.experiments.exporting import export_run
from slimtrain.experiments.sweeping import sweep

BASE = {
    "data": {"name": "digits", "val_fraction": 0.2},
    "model": {"name": "mlp", "kwargs": {"widths": [32, 32]}},
    "optimizer": {"lr": 0.05},
    "train": {"epochs": 1, "batch_size": 64, "max_steps": 6, "progress": False, "tensorboard": False},
}


def _write(directory, name, **sections):
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**BASE, **sections, "name": name, "output_dir": str(directory / "runs")}))
    return path


def _train(directory, name, **sections):
    assert main(["train", str(_write(directory, name, **sections))]) == EXIT_OK
    return directory / "runs" / name


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Finished tiny runs on digits: SWD (target 0.9), TDLRT (tau 0.3) and dense, all MLPs."""
    root = tmp_path_factory.mktemp("levels")
    return {
        "swd": _train(root, "swd", method={"name": "swd", "options": {"target": 0.9}}),
        "tdlrt": _train(root, "tdlrt", method={"name": "tdlrt", "options": {"tau": 0.3}}),
        "dense": _train(root, "dense"),
    }


def test_sweep_refuses_a_level_training_did_not_set(runs, capsys):
    """The issue's case: SWD trained at target 0.9 "swept at 0.5" reported sparsity 0.90 under level 0.5.
    Now `sweep --levels 0.5` exits 2 naming the run's own level; the default sweep gives one native row that
    carries the level under the option's name and the realized sparsity.
    """
    assert main(["sweep", str(runs["swd"]), "--levels", "0.5"]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "target 0.9" in err and "method.options.target" in err
    assert not (runs["swd"] / "sweep-native.json").exists()
    (row,) = sweep(runs["swd"])
    assert row["structure"] == "native" and row["requested_level"] == 0.9
    assert row["level_option"] == "target" and row["target"] == 0.9
    assert row["sparsity_prunable"] == pytest.approx(0.9, abs=1e-3)
    assert main(["sweep", str(runs["swd"])]) == EXIT_OK
    assert "target 0.9" in capsys.readouterr().out  # the level under its own name


def test_export_refuses_a_level_training_did_not_set(runs, capsys):
    """TDLRT at tau 0.3 exported "at 0.9" used to write the tau model as `native-0.9`. Now it exits 2,
    writes nothing, and without --level exports the run's own level as `native-tau0.3`.
    """
    run = runs["tdlrt"]
    assert main(["export", str(run), "--level", "0.9", "--latency-batch-sizes"]) == EXIT_BAD_INPUT
    assert "tau 0.3" in capsys.readouterr().err
    assert not (run / "exported").exists()
    assert main(["export", str(run), "--latency-batch-sizes"]) == EXIT_OK
    assert "at tau 0.3" in capsys.readouterr().out
    manifest = json.loads((run / "exported" / "native-tau0.3" / "manifest.json").read_text())
    assert manifest["extra"]["tau"] == 0.3 and manifest["extra"]["level_option"] == "tau"
    assert manifest["extra"]["run_identity"] == json.loads((run / "results.json").read_text())["run_identity"]


@pytest.mark.parametrize("structure", ["lowrank", "unstructured", "filter"])
def test_structures_a_set_by_training_method_does_not_produce(runs, structure):
    """TDLRT produces only its trained model (native): other structures are refused naming it."""
    with pytest.raises(BadInputError, match=r"does not produce structure .*native: tau 0\.3"):
        sweep(runs["tdlrt"], structure=structure)


def test_native_of_an_after_training_method_is_level_0(runs):
    """`native` is the dense run as trained: level 0 only; export names it `native-0`."""
    with pytest.raises(BadInputError, match="as it is"):
        export_run(runs["dense"], 0.5, structure="native", latency_batch_sizes=())
    result = export_run(runs["dense"], structure="native", latency_batch_sizes=())
    assert result.level == 0.0 and result.path.name == "native-0"
    with pytest.raises(BadInputError, match="needs a level"):
        export_run(runs["dense"], structure="unstructured", latency_batch_sizes=())


def test_export_and_sweep_refuse_a_structure_with_nothing_to_compress(runs, capsys):
    """`export --structure filter` on an MLP used to write `filter-0.5` at 1.00x and exit 0: an MLP has no
    conv filter, so it exits 2 saying so and writes nothing; `lowrank` (conv factorization) likewise.
    """
    run = runs["dense"]
    args = ["export", str(run), "--structure", "filter", "--level", "0.5", "--latency-batch-sizes"]
    assert main(args) == EXIT_BAD_INPUT
    assert "structure 'filter' removes conv filters; model 'mlp' has no Conv2d" in capsys.readouterr().err
    assert not (run / "exported" / "filter-0.5").exists()
    assert main(["sweep", str(run), "--structure", "lowrank"]) == EXIT_BAD_INPUT
    assert "model 'mlp' has no Conv2d" in capsys.readouterr().err
    assert not (run / "sweep-lowrank.json").exists()


def test_compare_refuses_a_structure_with_nothing_to_compress_before_training(tmp_path, capsys):
    """`compare --structure filter` on the MLP reported sparsity 0 at level 0.98; now it exits 2 before
    training anything.
    """
    path = _write(tmp_path, "mlp", evaluation={"levels": [0.98]})
    args = ["compare", str(path), "--output", str(tmp_path / "cmp"), "--structure", "filter"]
    assert main(args) == EXIT_BAD_INPUT
    assert "model 'mlp' has no Conv2d" in capsys.readouterr().err
    assert not (tmp_path / "cmp").exists()


def test_compare_refuses_a_structure_the_method_does_not_produce_before_training(tmp_path):
    """An SFW k-support run produces unstructured sparsity only: `compare --structure filter` stops before
    training, naming the structures it supports.
    """
    path = _write(
        tmp_path,
        "sfw",
        model={"name": "lenet5"},
        method={"name": "sfw", "options": {"mode": "unstructured"}},
        optimizer={"lr": 0.05, "weight_decay": 0.0},
    )
    with pytest.raises(BadInputError, match=r"structure 'filter'.*unstructured"):
        compare([path], tmp_path / "cmp", structure="filter")
    assert not (tmp_path / "cmp").exists()


def test_compare_trains_one_run_per_level_and_labels_it_with_the_option(tmp_path):
    """A set-by-training method in compare: one training per `evaluation.levels` entry, each row carrying
    its own level under the option's name.
    """
    path = _write(
        tmp_path,
        "swd",
        method={"name": "swd", "options": {}},
        evaluation={"levels": [0.5, 0.8]},
    )
    result = compare([path], tmp_path / "cmp", seeds=[0])
    rows = sorted(result["rows"], key=lambda r: r["requested_level"])
    assert [(r["structure"], r["requested_level"], r["target"]) for r in rows] == [
        ("native", 0.5, 0.5),
        ("native", 0.8, 0.8),
    ]
    assert [round(r["sparsity_prunable"], 2) for r in rows] == [0.5, 0.8]


def test_a_level_set_through_another_option_is_the_run_as_trained(tmp_path, capsys):
    """A TT run given a rank (not a `storage_reduction` level) is evaluated as trained, level 0, with no
    option value to claim; any other level is refused.
    """
    run = _train(tmp_path, "tt", method={"name": "tt-sgd", "options": {"rank": 3}})
    (row,) = sweep(run)
    assert (row["structure"], row["requested_level"], row["level_option"]) == ("native", 0.0, None)
    assert row["compression_ratio_all"] > 1
    assert main(["sweep", str(run), "--levels", "0.5"]) == EXIT_BAD_INPUT
    assert "another option than 'storage_reduction'" in capsys.readouterr().err

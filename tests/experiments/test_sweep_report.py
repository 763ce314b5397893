"""Sweep, compare and report on a dense model pruned by magnitude."""

import json

import pytest
import yaml

from slimtrain.experiments.comparison import compare
from slimtrain.experiments.report import write_report
from slimtrain.experiments.sweeping import sweep
from slimtrain.train.config import recipe_from_dict
from slimtrain.train.trainer import Trainer

TREE = {
    "name": "dense-small",
    "data": {"name": "digits", "val_fraction": 0.2},
    "model": {"name": "mlp", "kwargs": {"widths": [48]}},
    "train": {"epochs": 3, "batch_size": 64, "progress": False},
    "evaluation": {"structure": "unstructured", "levels": [0.0, 0.5, 0.9, 0.99]},
}


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "dense"
    Trainer(recipe_from_dict(TREE), run_dir).fit()
    return run_dir


def test_sweep_rows_follow_levels(trained_run):
    """One row per level; level 0 equals the dense accuracy; achieved sparsity matches the request; the
    compression ratio is 1/(1 − sparsity) of the population it names.
    """
    rows = sweep(trained_run)
    assert [r["requested_level"] for r in rows] == [0.0, 0.5, 0.9, 0.99]
    assert rows[0]["acc_compressed_no_ft"] == pytest.approx(rows[0]["acc_dense"])
    for row in rows:
        assert row["sparsity_prunable"] == pytest.approx(row["requested_level"], abs=1e-3)
        assert row["compression_ratio_prunable"] == pytest.approx(
            1 / (1 - row["sparsity_prunable"]), rel=1e-6
        )
    assert rows[-1]["acc_compressed_no_ft"] < rows[0]["acc_compressed_no_ft"]


def test_sweep_never_compresses_cumulatively(trained_run):
    """Sweeping levels in another order gives identical rows: every level starts from the checkpoint."""
    forward = {
        r["requested_level"]: r for r in sweep(trained_run, levels=[0.5, 0.9], structure="unstructured")
    }
    (trained_run / "sweep-unstructured.json").unlink()
    backward = {r["requested_level"]: r for r in sweep(trained_run, levels=[0.9, 0.5])}
    for level in (0.5, 0.9):
        assert forward[level]["acc_compressed_no_ft"] == backward[level]["acc_compressed_no_ft"]
        assert forward[level]["params_nonzero_all"] == backward[level]["params_nonzero_all"]


def test_interrupted_sweep_does_not_redo_levels(trained_run):
    """Levels already in the sweep file are kept as they are and not recomputed."""
    sweep(trained_run, levels=[0.5])
    path = trained_run / "sweep-unstructured.json"
    data = json.loads(path.read_text())
    data["rows"][0]["marker"] = "kept"
    path.write_text(json.dumps(data))
    rows = sweep(trained_run, levels=[0.5, 0.7])
    assert [r.get("marker") for r in rows] == ["kept", None]


def test_compare_and_report_contain_the_table_numbers(tmp_path):
    """Compare trains two recipes, and the report's markdown and HTML contain the aggregated accuracies."""
    paths = []
    for name, lr in (("a", 0.1), ("b", 0.05)):
        tree = {**TREE, "name": name, "optimizer": {"lr": lr}, "train": {**TREE["train"], "epochs": 1}}
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(tree))
        paths.append(path)
    result = compare(paths, tmp_path / "cmp", seeds=[0, 1])
    report = write_report(tmp_path / "cmp")
    text, page = report.read_text(), (tmp_path / "cmp" / "report.html").read_text()
    assert len(result["aggregated"]) == 2 * 4
    for row in result["aggregated"]:
        assert row["seeds"] == 2
        number = f"{row['acc_compressed_no_ft']:.4f}"
        assert number in text and number in page
    assert (tmp_path / "cmp" / "accuracy_vs_storage_fraction_prunable.png").read_bytes()[:4] == b"\x89PNG"


def test_compare_refuses_different_models(tmp_path):
    """Recipes on different models are not compared (an unfair comparison), naming the section."""
    from slimtrain.errors import RecipeError

    for name, widths in (("a", [8]), ("b", [16])):
        (tmp_path / f"{name}.yaml").write_text(
            yaml.safe_dump({**TREE, "name": name, "model": {"name": "mlp", "kwargs": {"widths": widths}}})
        )
    with pytest.raises(RecipeError, match="differ in 'model'"):
        compare([tmp_path / "a.yaml", tmp_path / "b.yaml"], tmp_path / "out")
    assert not (tmp_path / "out" / "compare.json").exists()


def test_compare_refuses_to_reuse_a_run_of_another_recipe(tmp_path):
    """A finished run in the output folder is reused only if it was trained from the same recipe.

    Otherwise the comparison would silently report the old run (say, a smoke run on other data) under the
    new recipe's name; it stops, names the differing key, and leaves the stored run as it was.
    """
    from slimtrain.errors import RecipeError

    path = tmp_path / "a.yaml"
    tree = {**TREE, "name": "a", "train": {**TREE["train"], "epochs": 1}}
    path.write_text(yaml.safe_dump(tree))
    compare([path], tmp_path / "cmp", seeds=[0])
    stored = (tmp_path / "cmp" / "a" / "seed0" / "results.json").read_bytes()

    quiet = {**tree, "train": {**tree["train"], "progress": True}}
    path.write_text(yaml.safe_dump(quiet))
    compare([path], tmp_path / "cmp", seeds=[0])  # display settings do not change the run: reused

    path.write_text(yaml.safe_dump({**tree, "optimizer": {"lr": 0.2}}))
    with pytest.raises(RecipeError, match=r"optimizer\.lr: 0\.1 → 0\.2"):
        compare([path], tmp_path / "cmp", seeds=[0])
    assert (tmp_path / "cmp" / "a" / "seed0" / "results.json").read_bytes() == stored

"""benchmarks/paper_scale.py: every run and its command in the plan, valid recipes, reuse, honest GPU-hours.

Runs are reused by their recipe digest only; GPU-hours come only from a step time measured on a GPU.
"""

import pytest
import torch
from benchmarks import paper_scale

from slimtrain.train.checkpoint import CheckpointStore
from slimtrain.train.config import load_recipe
from slimtrain.train.identity import recipe_digest

RUNS = paper_scale.planned_runs()
RECIPE_RUNS = [run for run in RUNS if run.recipe]
SYNTHETIC = paper_scale.data_section(None)


def test_dry_run_lists_every_run_and_its_command(tmp_path, monkeypatch, capsys):
    """One table row per run, naming it and its command; absent CIFAR-10 is said; the plan is written."""
    monkeypatch.setattr(paper_scale, "cifar10_dir", lambda data_dir: None)
    runs_dir = tmp_path / "runs"
    args = ["--dry-run", "--device", "cpu", "--runs-dir", str(runs_dir), "--results-dir", str(tmp_path)]
    assert paper_scale.main(args) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert len(rows) == len(RUNS)
    for row, run in zip(rows, RUNS, strict=True):
        assert f"| {run.name} |" in row
        assert f"`{paper_scale.commands(run, runs_dir, 'cpu')}`" in row
        assert "| to run |" in row and "not measured" in row
    assert "synthetic CIFAR-shaped data" in out
    assert (tmp_path / paper_scale.PLAN_FILE).read_text() + "\n" == out
    # The recipes the commands read are written, and load to the planned recipes; no run directory is made.
    for run in RECIPE_RUNS:
        stored = load_recipe(runs_dir / "recipes" / f"{run.name}.yaml")
        assert recipe_digest(stored) == recipe_digest(paper_scale.build_recipe(run, SYNTHETIC, runs_dir))
    assert sorted(p.name for p in runs_dir.iterdir()) == ["recipes"]


def test_the_campaign_covers_each_papers_headline_settings():
    """SFW three ways on ResNet-56; SWD's targets on ResNet-20/56; TDLRT against fixed rank; NN-BCD's CNN."""
    by_method: dict[tuple[str, str], list] = {}
    for run in RECIPE_RUNS:
        key = (run.recipe["model"]["name"], run.recipe["method"]["name"])
        by_method.setdefault(key, []).append(run.recipe["method"]["options"])
    assert sorted(o["constraint"] for o in by_method[("resnet56", "sfw")]) == ["k_sparse", "k_support"]
    assert ("resnet56", "dense") in by_method
    for model in ("resnet20", "resnet56"):
        assert sorted(o["target"] for o in by_method[(model, "swd")]) == [0.9, 0.95, 0.99, 0.995]
        assert sorted(o["target"] for o in by_method[(model, "swd-structured")]) == [0.5, 0.7, 0.9]
    for model in ("resnet20", "vgg16_bn"):
        assert len(by_method[(model, "tdlrt")]) == len(by_method[(model, "fixed-rank")]) == 3
    assert [run.name for run in RUNS if run.command] == ["nnbcd-cnn-mnist10pct"]


@pytest.mark.parametrize("run", RECIPE_RUNS, ids=lambda run: run.name)
def test_every_recipe_validates_on_cifar_and_synthetic_data(run, tmp_path):
    """Each recipe passes the recipe and method schemas, with CIFAR-10 and with the synthetic stand-in."""
    for data in (SYNTHETIC, paper_scale.data_section(tmp_path)):
        recipe = paper_scale.build_recipe(run, data, tmp_path)
        assert recipe.name == run.name and recipe.data.name == data["name"]
        assert recipe.train.batch_size == paper_scale.BATCH and recipe.train.epochs == run.epochs


def test_runs_have_distinct_names_and_recipes(tmp_path):
    """No two runs share a directory or a recipe digest (they would reuse each other's results)."""
    assert len({run.name for run in RUNS}) == len(RUNS)
    digests = {recipe_digest(paper_scale.build_recipe(run, SYNTHETIC, tmp_path)) for run in RECIPE_RUNS}
    assert len(digests) == len(RECIPE_RUNS)


def _finish(run_dir, recipe) -> None:
    """A finished run directory: the stored recipe and a final checkpoint listed in the manifest."""
    run_dir.mkdir(parents=True)
    (run_dir / "recipe.yaml").write_text(recipe.to_yaml())
    CheckpointStore(run_dir / "checkpoints").save({"weights": torch.zeros(1)}, 1, final=True)


def test_finished_runs_are_reused_only_for_the_same_recipe(tmp_path):
    """Done when the directory holds a finished run of this recipe or the ledger records its digest."""
    run, other = RECIPE_RUNS[0], RECIPE_RUNS[1]
    recipe = paper_scale.build_recipe(run, SYNTHETIC, tmp_path)
    assert paper_scale.status(run, recipe, tmp_path, {}, tmp_path) == "to run"
    ledger = {run.name: {"recipe_digest": recipe_digest(recipe)}}
    assert paper_scale.status(run, recipe, tmp_path, ledger, tmp_path) == "done (recorded)"
    stale = {run.name: {"recipe_digest": recipe_digest(paper_scale.build_recipe(other, SYNTHETIC, tmp_path))}}
    assert paper_scale.status(run, recipe, tmp_path, stale, tmp_path) == "to run"
    _finish(tmp_path / run.name, recipe)
    assert paper_scale.status(run, recipe, tmp_path, {}, tmp_path) == "done"
    other_recipe = paper_scale.build_recipe(other, SYNTHETIC, tmp_path)
    _finish(tmp_path / other.name, paper_scale.build_recipe(run, SYNTHETIC, tmp_path))
    assert paper_scale.status(other, other_recipe, tmp_path, {}, tmp_path).startswith("conflict")


def test_gpu_hours_come_only_from_a_gpu_step_time():
    """A CPU step time is shown as such, never turned into GPU-hours; a GPU one gives hours and the GPU."""
    run = RECIPE_RUNS[0]
    cpu = {"CPU: x": {"kind": "cpu", "step_ms": 2500.0}}
    assert paper_scale.gpu_hours(run, {}) == "not measured"
    assert paper_scale.gpu_hours(run, {run.setting: cpu}) == "not measured (CPU: 2500 ms/step)"
    gpu = {**cpu, "Some GPU": {"kind": "cuda", "step_ms": 36.0}}
    hours = paper_scale.gpu_hours(run, {run.setting: gpu})
    assert hours.startswith(f"{36.0 * run.steps / 3.6e6:.1f} (Some GPU")

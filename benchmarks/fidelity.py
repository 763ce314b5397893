"""Shared runner of fidelity benchmarks: compare recipes over seeds, record accuracies and who leads.

A fidelity benchmark trains each recipe at each seed through ``slimtrain compare`` (same data, model and
epochs), sweeps the compression levels, and records per level the test accuracy of every seed, the mean
training time, and a verdict for each recipe against the baseline recipe: it "leads" only when the gap
exceeds two pooled standard errors over seeds (``slimtrain.experiments.significance``). The comparison's
report (markdown, HTML, PNG plots) stays in the output directory and the accuracy plot is copied next to
the JSON results.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml

from benchmarks.harness import BenchmarkRecorder, results_folder
from slimtrain.experiments.comparison import compare
from slimtrain.experiments.report import write_report
from slimtrain.experiments.significance import verdict

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def fidelity_arguments(description: str, *, datasets: bool = False) -> argparse.ArgumentParser:
    """The command-line arguments every fidelity benchmark takes (and ``--dataset`` if ``datasets``)."""
    parser = argparse.ArgumentParser(description=description)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="digits-sized smoke run (default)")
    mode.add_argument("--full", action="store_true", help="the settings the issue asks for")
    parser.add_argument(
        "--data-dir",
        default=os.environ.get("SLIMTRAIN_DATA_DIR"),
        help="folder holding mnist/ and fashion-mnist/ (default: $SLIMTRAIN_DATA_DIR)",
    )
    parser.add_argument("--output", type=Path, default=None, help="runs folder (default runs/bench/<name>)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    if datasets:
        parser.add_argument(
            "--dataset",
            choices=("fashion-mnist", "mnist"),
            default="fashion-mnist",
            help="--full only: the dataset (results of mnist: <name>_mnist…)",
        )
    return parser


def recipe_copy(
    recipe: Path, folder: Path, *, options: dict[str, Any] | None = None, levels: list[float] | None = None
) -> Path:
    """Write ``recipe`` to ``folder`` under the same file name, with method options and levels changed.

    Args:
        recipe: the recipe file.
        folder: where the copy goes (created if missing).
        options: method options to set (merged into the recipe's).
        levels: evaluation levels to set instead of the recipe's (``None`` keeps them).
    """
    tree = yaml.safe_load(recipe.read_text())
    tree["method"]["options"] = {**tree["method"].get("options", {}), **(options or {})}
    if levels is not None:
        tree["evaluation"]["levels"] = levels
    folder.mkdir(parents=True, exist_ok=True)
    copy = folder / recipe.name
    copy.write_text(yaml.safe_dump(tree, sort_keys=False))
    return copy


def tune_recipes(
    recipes: list[Path],
    grid: dict[str, tuple[str, list[float]]],
    level: float,
    overrides: list[str],
    out: Path,
) -> tuple[list[Path], dict[str, Any]]:
    """Give every recipe the same tuning budget: its best value of one option, chosen on validation.

    Each recipe trains once (seed 0) per candidate value of its option and is pruned at ``level``; the value
    with the best validation accuracy after pruning wins (the first of equal scores, so ties go to the
    smaller value). Test data play no part in the choice.

    Args:
        recipes: recipe files, each named ``<model>-<method>.yaml``.
        grid: the option and its candidates, keyed by the part of a recipe's file name after the model
            (``mlp-swd.yaml`` → ``swd``); a recipe without an entry is left as it is.
        level: the compression level the candidates are judged at (the hardest one of the benchmark).
        overrides: ``key=value`` overrides of the benchmark, applied to every tuning run.
        out: folder of the tuning runs and of the tuned recipe copies.

    Returns:
        The tuned recipe files (copies with the chosen value, same names) and a record of the values tried,
        their validation accuracies and the choices.
    """
    tuned, record = [], {}
    for recipe in recipes:
        method = recipe.stem.split("-", 1)[1]
        if method not in grid:
            tuned.append(recipe)
            continue
        option, candidates = grid[method]
        scores = {}
        for value in candidates:
            result = compare(
                [recipe],
                out / "tuning" / method / f"{option}-{value:g}",
                seeds=[0],
                overrides=[*overrides, f"method.options.{option}={value}", f"evaluation.levels=[{level}]"],
            )
            scores[f"{value:g}"] = result["rows"][0]["val_acc_compressed_no_ft"]
        best = max(candidates, key=lambda v: scores[f"{v:g}"])
        tuned.append(recipe_copy(recipe, out / "tuned", options={option: best}))
        record[f"{method} {option} tried: validation accuracy after pruning (seed 0)"] = scores
        record[f"{method} {option} chosen"] = best
    return tuned, record


def save_tuning(name: str, mode: str, record: dict[str, Any]) -> None:
    """Write the tuning record of benchmark ``name`` as ``<name>_tuning.json`` next to its results."""
    (results_folder(mode) / f"{name}_tuning.json").write_text(json.dumps(record, indent=1) + "\n")


def run_fidelity(
    name: str,
    argv: list[str] | None,
    recipes: list[Path],
    *,
    baseline: str,
    overrides: list[str],
    seeds: list[int],
    output: Path | None = None,
    structure: str | None = None,
    notes: dict[str, Any] | None = None,
    module: str | None = None,
) -> int:
    """Compare ``recipes`` over ``seeds``, record every level's accuracies and verdicts, save the results.

    Args:
        name: benchmark name (results in ``benchmarks/results/<name>.json``).
        argv: the benchmark's arguments (recorded as its command).
        recipes: recipe files; their names identify the lines of the results.
        baseline: recipe name every other recipe is compared with at each level.
        overrides: ``key=value`` overrides applied to every recipe (data folder, epochs, ...).
        seeds: training seeds.
        output: where the runs go (default ``runs/bench/<name>``).
        structure: compression structure for after-training methods (default: each recipe's own).
        notes: extra fields to record (e.g. the hyperparameters tried during tuning).
        module: the benchmark module, when it is not ``bench_<name>`` (recorded in the command).
    """
    rec = BenchmarkRecorder(name, argv, module=module)
    out = output or Path("runs/bench") / name
    result = compare(recipes, out, seeds=seeds, overrides=overrides, structure=structure)
    write_report(out, title=f"benchmark {name}")
    accuracy: dict[tuple[str, float], list[float]] = defaultdict(list)
    for row in result["rows"]:
        accuracy[(row["recipe"], row["requested_level"])].append(row["acc_compressed_no_ft"])
    # One training per (recipe, seed) — or per level for during-training methods — each with its own time.
    trainings = {(r["recipe"], r["seed"], r.get("train_seconds", float("nan"))) for r in result["rows"]}
    seconds: dict[str, list[float]] = defaultdict(list)
    for recipe, _, value in sorted(trainings):
        seconds[recipe].append(value)
    for (recipe, level), values in sorted(accuracy.items()):
        rec.add(f"test_acc {recipe} @ {level:g}", values, unit="accuracy")
    for recipe, values in sorted(seconds.items()):
        rec.add(f"train_seconds {recipe}", values, unit="s")
    verdicts = {}
    for (recipe, level), values in sorted(accuracy.items()):
        reference = accuracy.get((baseline, level))
        if recipe != baseline and reference and len(values) > 1 and len(reference) > 1:
            verdicts[f"{recipe} vs {baseline} @ {level:g}"] = verdict(values, reference)
    rec.note("verdicts (A = recipe, B = baseline; lead = gap > 2 pooled SE)", verdicts)
    rec.note("seeds", seeds)
    rec.note("overrides", overrides)
    for key, value in (notes or {}).items():
        rec.note(key, value)
    results_dir = results_folder(rec.mode)
    rec.save(results_dir)
    for plot in out.glob("accuracy_vs_*.png"):
        shutil.copyfile(plot, results_dir / f"{name}_{plot.name}")
    return 0

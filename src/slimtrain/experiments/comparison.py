"""Compare: train several recipes on the same data, model and budget, sweep each, aggregate over seeds.

"Same budget" means the same number of epochs over the same data; every row also carries the gradient
evaluations and wall time of its training, so a reader can compare on either. Methods that fix their level
during training (SWD's target, TDLRT's tolerance) are trained once per level. Hyperparameters are meant to
be chosen on the validation split (``val_acc_compressed_no_ft``); test accuracy is reported, never used to
select anything here.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from slimtrain.errors import RecipeError
from slimtrain.experiments.sweeping import sweep
from slimtrain.io import atomic_write_text
from slimtrain.train.checkpoint import CheckpointStore
from slimtrain.train.config import Recipe, load_recipe
from slimtrain.train.method import get_method_class
from slimtrain.train.trainer import Trainer, check_resumable

COMPARE_FILE = "compare.json"
_SHARED_SECTIONS = ("data", "model")


def _check_same_footing(recipes: list[Recipe]) -> None:
    """Refuse to compare recipes that differ in data, model or epochs (the comparison would be unfair)."""
    first = recipes[0]
    for other in recipes[1:]:
        for section in _SHARED_SECTIONS:
            if getattr(first, section) != getattr(other, section):
                raise RecipeError(
                    f"recipes '{first.name}' and '{other.name}' differ in '{section}'; "
                    "compare needs the same data and model (use --set to align them)"
                )
        if first.train.epochs != other.train.epochs:
            raise RecipeError(
                f"recipes '{first.name}' and '{other.name}' differ in 'train.epochs' "
                f"({first.train.epochs} vs {other.train.epochs}); compare needs the same budget"
            )


def _runs_of(recipe: Recipe, seed: int) -> list[tuple[Recipe, float | None]]:
    """The trainings one recipe needs at one seed: one, or one per level for during-training methods.

    A during-training run gets its level written into the method option that holds it and evaluates only
    that level, so its sweep rows carry the level as ``requested_level``.
    """
    method = get_method_class(recipe.method.name)
    base = recipe.model_copy(deep=True, update={"seed": seed})
    if method.levels_chosen == "after_training" or not recipe.evaluation.levels:
        return [(base, None)]
    runs = []
    for level in recipe.evaluation.levels:
        run = base.model_copy(deep=True)
        run.method.options = {**run.method.options, method.level_option: level}
        run.evaluation.levels = [level]
        runs.append((run, level))
    return runs


def _run_dir(out: Path, recipe: Recipe, seed: int, level: float | None) -> Path:
    leaf = f"seed{seed}" if level is None else f"seed{seed}-level{level:g}"
    return out / recipe.name / leaf


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and standard deviation over seeds of every numeric field, per recipe, structure and level."""
    groups: dict[tuple[str, str, float], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[(row["recipe"], row["structure"], row["requested_level"])].append(row)
    table = []
    for (recipe, structure, level), members in sorted(groups.items()):
        entry: dict[str, Any] = {
            "recipe": recipe,
            "method": members[0]["method"],
            "structure": structure,
            "requested_level": level,
            "seeds": len(members),
        }
        for key, value in members[0].items():
            if key in entry or key == "seed" or not isinstance(value, int | float) or isinstance(value, bool):
                continue
            values = [m[key] for m in members if isinstance(m.get(key), int | float)]
            entry[key] = statistics.fmean(values)
            entry[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        table.append(entry)
    return table


def compare(
    recipe_paths: list[str | Path],
    output_dir: str | Path,
    *,
    seeds: list[int] | None = None,
    overrides: list[str] | None = None,
    structure: str | None = None,
    latency: bool = False,
) -> dict[str, Any]:
    """Train (or resume) every recipe at every seed, sweep each run, and write ``compare.json``.

    Args:
        recipe_paths: YAML recipes; they must share data, model and epochs.
        output_dir: where each run (``<recipe>/seed<s>[-level<l>]``) and ``compare.json`` go.
        seeds: seeds to train (default: each recipe's own seed).
        overrides: ``key=value`` overrides applied to every recipe.
        structure: compression structure for after-training methods (default: each recipe's).
        latency: measure latency in every sweep row.

    Returns:
        ``{"rows": per-run rows, "aggregated": mean/std over seeds}``, also written to ``compare.json``.
    """
    out = Path(output_dir)
    recipes = [load_recipe(path, overrides) for path in recipe_paths]
    names = [r.name for r in recipes]
    if len(set(names)) != len(names):
        raise RecipeError(f"recipe names must be distinct in a comparison, got {names}")
    _check_same_footing(recipes)
    rows: list[dict[str, Any]] = []
    for recipe in recipes:
        for seed in seeds if seeds is not None else [recipe.seed]:
            for run, level in _runs_of(recipe, seed):
                run_dir = _run_dir(out, run, seed, level)
                if CheckpointStore(run_dir / "checkpoints").load_latest(final_only=True) is None:
                    Trainer(run, run_dir).fit(resume=True)  # checks the stored recipe itself
                else:
                    check_resumable(run_dir, run)
                rows.extend(sweep(run_dir, structure=structure, latency=latency))
    result = {"recipes": names, "seeds": seeds, "rows": rows, "aggregated": aggregate(rows)}
    atomic_write_text(out / COMPARE_FILE, json.dumps(result, indent=1, default=float))
    return result

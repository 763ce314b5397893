"""Compare: train several recipes on the same data, model and budget, sweep each, aggregate over seeds.

"Same budget" means the same number of epochs over the same data; every row also carries the gradient
evaluations and wall time of its training, so a reader can compare on either. Methods that fix their level
during training (SWD's target, TDLRT's tolerance) are trained once per level. Hyperparameters are meant to
be chosen on the validation split (``val_acc_compressed_no_ft``); test accuracy is reported, never used to
select anything here.

A finished run already in the output folder is reused only through its run identity
(:mod:`slimtrain.train.identity`: same recipe digest), and its sweep rows only at the same identity,
structure, level and evaluation settings (``evaluation.bn_recalibration`` included); anything else is
recomputed. A structure or level a method does not produce, or a structure with nothing to compress in the
model, is refused before any training.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from slimtrain.errors import BadInputError, RecipeError
from slimtrain.experiments.sweeping import check_compressible, resolve_levels, sweep
from slimtrain.io import atomic_write_text
from slimtrain.progress import Progress
from slimtrain.train.config import Recipe, load_recipe
from slimtrain.train.identity import recipe_digest, run_identity
from slimtrain.train.method import Method, get_method_class
from slimtrain.train.trainer import Trainer, build_run, check_resumable

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


def _evaluation(method: Method, structure: str | None) -> tuple[str | None, list[float] | None]:
    """The structure and levels one run of ``method`` is swept at.

    A method choosing its level after training: ``structure`` (else its recipe's) at its recipe's levels; a
    method setting it during training: its own level, ``native`` (``compare --structure`` is for the first
    kind).
    """
    evaluation = method.recipe.evaluation
    if method.levels_chosen == "during_training":
        return None, None
    return structure or evaluation.structure, evaluation.levels


def _check_evaluable(run: Recipe, structure: str | None) -> None:
    """Refuse, before any training, a run whose sweep would refuse its structure or levels.

    Raises:
        BadInputError: The method does not produce the structure or a level (naming what it produces), or
            the structure has nothing to compress in the model.
    """
    method = get_method_class(run.method.name)(run.method_options(), run)
    structure, levels = _evaluation(method, structure)
    structure, declared, _ = resolve_levels(method, structure, levels)
    if declared.chosen_after_training and structure != "native":
        comp = build_run(run, initial_weights=False)  # only the layer structure is checked
        example = comp.splits.test.inputs[:2].to(device=comp.device, dtype=comp.dtype)
        check_compressible(comp.model, structure, run.model.label, example)


def _reuse_or_train(run: Recipe, run_dir: Path) -> None:
    """Train ``run`` in ``run_dir`` (resuming an unfinished run), or reuse the finished run there.

    A finished run is reused only when its identity's recipe digest is the requested recipe's
    (:mod:`slimtrain.train.identity`); its sweep rows are then reused only at the same identity, structure,
    level and evaluation settings.

    Raises:
        RecipeError: The finished run was trained from another recipe (naming every key that differs).
        BadInputError: Its identity differs for another reason (e.g. the ``model.init_from`` weights).
    """
    identity = run_identity(run_dir)
    if identity is None:
        Trainer(run, run_dir).fit(resume=True)  # checks the stored recipe itself
        return
    check_resumable(run_dir, run)
    if identity.recipe_digest != recipe_digest(run):
        raise BadInputError(
            f"{run_dir} holds a run whose identity differs from recipe '{run.name}' (recipe digest "
            f"{identity.recipe_digest[:12]} vs {recipe_digest(run)[:12]}); use another output directory "
            "or delete that run"
        )


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
            "level_option": members[0].get("level_option"),
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
    progress: bool | None = None,
) -> dict[str, Any]:
    """Train (or resume) every recipe at every seed, sweep each run, and write ``compare.json``.

    Args:
        recipe_paths: YAML recipes; they must share data, model and epochs.
        output_dir: where each run (``<recipe>/seed<s>[-level<l>]``) and ``compare.json`` go.
        seeds: seeds to train (default: each recipe's own seed).
        overrides: ``key=value`` overrides applied to every recipe.
        structure: compression structure for after-training methods (default: each recipe's); methods
            that set their level during training are swept ``native`` at their own level.
        latency: measure latency in every sweep row.
        progress: show run k/N, elapsed time and an ETA, and each sweep's levels
            (:class:`slimtrain.progress.Progress`: a bar on a terminal, plain lines otherwise); default shown
            when any recipe's ``train.progress`` is (training shows its own progress by its recipe).

    Returns:
        ``{"rows": per-run rows, "aggregated": mean/std over seeds}``, also written to ``compare.json``.

    Raises:
        RecipeError: Recipes on another footing, or a finished run in ``output_dir`` of another recipe.
        BadInputError: Before any training: a structure or level a method does not produce, or a structure
            with nothing to compress in the model.
    """
    out = Path(output_dir)
    recipes = [load_recipe(path, overrides) for path in recipe_paths]
    names = [r.name for r in recipes]
    if len(set(names)) != len(names):
        raise RecipeError(f"recipe names must be distinct in a comparison, got {names}")
    _check_same_footing(recipes)
    plan = [
        (run, _run_dir(out, run, seed, level))
        for recipe in recipes
        for seed in (seeds if seeds is not None else [recipe.seed])
        for run, level in _runs_of(recipe, seed)
    ]
    checked: set[str] = set()
    for run, _ in plan:  # every refusal before any training; the model is the same at every seed
        key = run.model_dump_json(exclude={"seed"})
        if key not in checked:
            _check_evaluable(run, structure)
            checked.add(key)
    rows: list[dict[str, Any]] = []
    shown = any(r.train.progress for r in recipes) if progress is None else progress
    with Progress(len(plan), "compare", "run", enabled=shown, every_s=0.0) as bar:
        for run, run_dir in plan:
            bar.step(str(run_dir.relative_to(out)))
            _reuse_or_train(run, run_dir)
            method = get_method_class(run.method.name)(run.method_options(), run)
            run_structure, run_levels = _evaluation(method, structure)
            evaluation = run.evaluation
            rows.extend(
                sweep(
                    run_dir,
                    structure=run_structure,
                    levels=run_levels,
                    bn_recalibration=evaluation.bn_recalibration,
                    bn_recalibration_batches=evaluation.bn_recalibration_batches,
                    latency=latency,
                    progress=progress,
                )
            )
    result = {"recipes": names, "seeds": seeds, "rows": rows, "aggregated": aggregate(rows)}
    atomic_write_text(out / COMPARE_FILE, json.dumps(result, indent=1, default=float))
    return result

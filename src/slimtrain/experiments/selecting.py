"""Select: the most compressed level whose validation accuracy stays within a drop of the dense model's.

The choice is made on the validation split only (mean over seeds); the chosen level's test accuracy is then
reported, never used to choose. "Most compressed" means the largest compression ratio over all parameters
(``compression_ratio_all``, one definition for every structure: ``docs/metrics.md``), ties going to the
higher level. The drop is absolute: ``max_drop=0.01`` allows one percentage point.

The dense model is, in this order: the recipe named by ``reference``; the one recipe of method ``dense`` in
the directory; else, for each recipe whose levels are chosen after training, its own trained model before
compression (the sweep rows' ``val_acc_dense``).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from slimtrain.errors import BadInputError
from slimtrain.experiments.comparison import aggregate
from slimtrain.experiments.report import (
    Reference,
    compressed_after_training,
    dense_recipes,
    level_name,
    seed_rows,
    trained_models,
)

__all__ = ["SelectedLevel", "select"]


@dataclass(frozen=True)
class SelectedLevel:
    """The level chosen for one recipe, or none when no level is within the drop.

    Attributes:
        recipe: The recipe.
        reference: The dense model the drop is measured from (its per-seed validation and test accuracies).
        max_drop: The allowed drop of mean validation accuracy (absolute).
        row: The chosen level's row, aggregated over seeds (mean and ``<field>_std`` of every field, as in
            ``compare.json``); ``None`` when no level is within the drop.
        best_val: The highest mean validation accuracy of any level of the recipe (to say how far it is).
    """

    recipe: str
    reference: Reference
    max_drop: float
    row: dict[str, Any] | None
    best_val: float

    @property
    def reference_val(self) -> float:
        """The dense model's mean validation accuracy."""
        return statistics.fmean(self.reference.val)

    @property
    def level(self) -> str | None:
        """The chosen level under its own name (``sparsity 0.9``, ``target 0.95``), or ``None``."""
        return None if self.row is None else level_name(self.row)

    @property
    def drop(self) -> float | None:
        """Dense mean validation accuracy minus the chosen level's (negative: the level is better)."""
        return None if self.row is None else self.reference_val - self.row["val_acc_compressed_no_ft"]


def _reference_of(rows: list[dict[str, Any]], directory: Path, name: str | None) -> dict[str, Reference]:
    """The dense model of every recipe in ``rows`` (see the module docstring).

    Raises:
        BadInputError: An unknown or unusable ``name``, several dense recipes and no ``name``, or a recipe
            with no dense model to measure from.
    """
    recipes = sorted({row["recipe"] for row in rows})
    if name is not None and name not in recipes:
        raise BadInputError(f"no recipe '{name}' in {directory}; its recipes: {', '.join(recipes)}")
    if name is None:
        dense = dense_recipes(rows)
        if len(dense) > 1:
            raise BadInputError(
                f"{directory} holds several dense recipes ({', '.join(dense)}); name the reference with "
                "--reference RECIPE"
            )
        name = dense[0] if dense else None
    if name is not None:
        if not compressed_after_training(rows, name):
            raise BadInputError(
                f"recipe '{name}' sets its level during training, so its trained model is already compressed "
                "and cannot be the dense reference; name a recipe of method dense (or one compressed after "
                "training)"
            )
        shared = trained_models(rows, name)
        return {recipe: shared for recipe in recipes}
    refused = [recipe for recipe in recipes if not compressed_after_training(rows, recipe)]
    if refused:
        raise BadInputError(
            f"no dense model in {directory} to measure the drop from: recipe(s) {', '.join(refused)} set "
            "their level during training, so their runs hold no uncompressed model; compare them with a "
            "recipe of method dense (or pass --reference RECIPE)"
        )
    return {recipe: replace(trained_models(rows, recipe), dense=False) for recipe in recipes}


def select(
    directory: str | Path, max_drop: float = 0.01, reference: str | None = None
) -> list[SelectedLevel]:
    """For each recipe of a run or compare directory, the most compressed level within ``max_drop``.

    Args:
        directory: A run directory after ``slimtrain sweep`` or the output directory of ``slimtrain
            compare``.
        max_drop: The largest allowed drop of mean validation accuracy below the dense model's, absolute
            (``0.01``: one percentage point), at least 0.
        reference: The recipe whose uncompressed trained model is the dense model (default: see the module
            docstring).

    Returns:
        One :class:`SelectedLevel` per recipe, sorted by recipe name.

    Raises:
        BadInputError: A negative or non-finite ``max_drop``; no dense model to measure from; rows written
            before sweeps recorded the trained model's validation accuracy (sweep again); runs without a
            validation split (``data.val_fraction: 0``).
        FileNotFoundError: ``directory`` is not a directory or holds no sweep results.

    Example:
        >>> for choice in select("runs/cmp", max_drop=0.01):  # doctest: +SKIP
        ...     print(choice.recipe, choice.level, choice.row["acc_compressed_no_ft"])
    """
    if not (math.isfinite(max_drop) and max_drop >= 0):
        raise BadInputError(
            f"--max-drop must be a number >= 0 (an accuracy drop such as 0.01), got {max_drop}"
        )
    directory = Path(directory)
    rows = seed_rows(directory)
    references = _reference_of(rows, directory, reference)
    aggregated = aggregate(rows)
    choices = []
    for recipe, ref in sorted(references.items()):
        if not ref.val:
            raise BadInputError(
                f"the sweep rows of recipe '{ref.recipe}' in {directory} predate the validation accuracy of "
                "the uncompressed model; run the same slimtrain sweep or compare again to add it"
            )
        own = [row for row in aggregated if row["recipe"] == recipe]
        if not all(math.isfinite(v) for v in ref.val) or not all(
            math.isfinite(row["val_acc_compressed_no_ft"]) for row in own
        ):  # a NaN would fail every comparison and read as "no level within the drop"
            culprit = ref.recipe if not all(math.isfinite(v) for v in ref.val) else recipe
            raise BadInputError(
                f"recipe '{culprit}' in {directory} has no validation accuracy (data.val_fraction is 0), "
                "and select chooses on validation accuracy only; train with data.val_fraction > 0"
            )
        floor = statistics.fmean(ref.val) - max_drop
        within = [row for row in own if row["val_acc_compressed_no_ft"] >= floor - 1e-12]
        chosen = max(within, key=_compression, default=None)
        best = max(row["val_acc_compressed_no_ft"] for row in own)
        choices.append(SelectedLevel(recipe, ref, max_drop, chosen, best))
    return choices


def _compression(row: dict[str, Any]) -> tuple[float, float]:
    ratio = row.get("compression_ratio_all")
    level = row["requested_level"]
    return (ratio if isinstance(ratio, float | int) and math.isfinite(ratio) else 0.0, level or 0.0)

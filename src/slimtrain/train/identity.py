"""The identity of a trained run: what it computed and the weights it ended with.

Everything derived from a run (sweep rows, reports, exports, the rows ``compare`` reuses) belongs to one
trained model. A run's **identity** names that model; it is the SHA-256 of

- the **recipe digest**: the SHA-256 of the recipe keys that change what is computed, i.e. every key except
  the presentation keys of :data:`PRESENTATION_KEYS` and the ``evaluation`` section (how a trained model is
  evaluated keys each sweep row instead, see :mod:`slimtrain.experiments.sweeping`). Method options are
  resolved by the method's schema (defaults written out), so a new option with a default does not change
  it; ``train.dtype`` (and ``train.precision``, once recipes have it) count. When the recipe sets
  ``model.init_from``, the SHA-256 of the weights file it loads is part of the digest too.
- the SHA-256 of the run's **final checkpoint**, as listed in ``checkpoints/manifest.json``.

The trainer writes the identity into ``results.json`` (``run_identity``, ``recipe_digest``,
``final_checkpoint_sha256``); it is always recomputed from the run directory, never trusted from there.
Usage: ``docs/training.md`` (run identity) and ``docs/reliability.md``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slimtrain.io import sha256_file
from slimtrain.train.checkpoint import CheckpointStore
from slimtrain.train.init_from import init_weights_file

if TYPE_CHECKING:
    from slimtrain.train.config import Recipe

__all__ = [
    "DERIVED_OUTPUTS",
    "EVALUATION_KEYS",
    "INIT_SHA256_KEY",
    "PRESENTATION_KEYS",
    "RunIdentity",
    "computed_keys",
    "final_checkpoint_sha256",
    "flatten_recipe",
    "init_weights_sha256",
    "is_finished",
    "recipe_digest",
    "remove_derived_outputs",
    "run_identity",
]

PRESENTATION_KEYS: tuple[str, ...] = (
    "name",
    "output_dir",
    "train.progress",
    "train.tensorboard",
    "train.log_every_steps",
    "train.checkpoint_every_steps",
    "train.device",
    "train.threads",
    "data.on_device",
)
"""Recipe keys that change where a run writes, how it shows progress and logs, or where it runs, not what it
computes (the final checkpoint's checksum records the weights actually reached)."""

EVALUATION_KEYS: tuple[str, ...] = ("evaluation",)
"""Recipe keys of the evaluation after training: part of each sweep row's key, not of the run identity."""

_INIT_FROM = "model.init_from"


@dataclass(frozen=True)
class RunIdentity:
    """A finished run's identity and its two parts.

    Attributes:
        digest: SHA-256 of ``recipe_digest`` and ``checkpoint_sha256``: the run identity.
        recipe_digest: SHA-256 of the recipe keys that change what is computed.
        checkpoint_sha256: SHA-256 of the final checkpoint file.
    """

    digest: str
    recipe_digest: str
    checkpoint_sha256: str

    def as_dict(self) -> dict[str, str]:
        """The fields written into ``results.json``."""
        return {
            "run_identity": self.digest,
            "recipe_digest": self.recipe_digest,
            "final_checkpoint_sha256": self.checkpoint_sha256,
        }


def flatten_recipe(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted keys of a recipe tree; a method's ``options`` stay one value."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value and key != "options":
            out.update(flatten_recipe(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _excluded(key: str, keys: tuple[str, ...]) -> bool:
    return any(key == k or key.startswith(k + ".") for k in keys)


def init_weights_sha256(recipe: Recipe) -> str | None:
    """SHA-256 of the weights file ``model.init_from`` loads now; ``None`` without one (or when it is gone).

    For a run directory the file is its final checkpoint, for an export its ``model.safetensors``
    (:func:`~slimtrain.train.init_from.init_weights_file`). The trainer records this value in its checkpoint
    manifest, so a finished run keeps its identity when the file is later moved or deleted.
    """
    return _weights_sha256(recipe.model.init_from) if recipe.model.init_from else None


def _weights_sha256(init_from: str) -> str | None:
    weights = init_weights_file(init_from)
    return sha256_file(weights) if weights is not None else None


def computed_keys(recipe: Recipe, init_sha256: str | None = None) -> dict[str, Any]:
    """The recipe's dotted keys that change what a run computes (see the module docstring).

    With ``model.init_from`` set, ``model.init_from.sha256`` holds the SHA-256 of the weights file it loads:
    ``init_sha256`` when given (recorded at training time), else :func:`init_weights_sha256` of the file now
    (``None`` when there is none, so a moved or deleted file never matches a digest made with it).
    """
    flat = flatten_recipe(recipe.model_dump(mode="json"))
    keys = {k: v for k, v in flat.items() if not _excluded(k, PRESENTATION_KEYS + EVALUATION_KEYS)}
    if keys.get(_INIT_FROM):
        keys[f"{_INIT_FROM}.sha256"] = init_sha256 or _weights_sha256(keys[_INIT_FROM])
    return keys


def recipe_digest(recipe: Recipe, init_sha256: str | None = None) -> str:
    """SHA-256 of :func:`computed_keys` (canonical JSON: sorted keys, no whitespace)."""
    text = json.dumps(computed_keys(recipe, init_sha256), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


INIT_SHA256_KEY = "init_from_sha256"
"""The checkpoint manifest entry key of :func:`init_weights_sha256` at training time."""


def _final_entry(run_dir: str | Path) -> dict[str, Any] | None:
    """The manifest entry of the run's final checkpoint; ``None`` before training ends."""
    finals = [e for e in CheckpointStore(Path(run_dir) / "checkpoints").entries() if e["final"]]
    return finals[-1] if finals else None


def final_checkpoint_sha256(run_dir: str | Path) -> str | None:
    """SHA-256 of the run's final checkpoint as listed in its manifest; ``None`` before training ends."""
    final = _final_entry(run_dir)
    return final["sha256"] if final else None


def is_finished(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds a finished run: a final checkpoint (listed or on disk), or results."""
    run_dir = Path(run_dir)
    return (
        (run_dir / "checkpoints" / "final.pt").exists()
        or (run_dir / "results.json").exists()
        or final_checkpoint_sha256(run_dir) is not None
    )


def run_identity(run_dir: str | Path, recipe: Recipe | None = None) -> RunIdentity | None:
    """The identity of the finished run in ``run_dir``; ``None`` when it has no final checkpoint.

    Args:
        run_dir: The run directory.
        recipe: The run's recipe (default: the ``recipe.yaml`` stored in ``run_dir``).

    Raises:
        RecipeError: The stored recipe cannot be read.
    """
    final = _final_entry(run_dir)
    if final is None:
        return None
    checkpoint = final["sha256"]
    if recipe is None:
        from slimtrain.train.config import load_stored_recipe

        recipe = load_stored_recipe(Path(run_dir) / "recipe.yaml")
    # the weights it started from as recorded when it trained: they may have moved since
    part = recipe_digest(recipe, final.get(INIT_SHA256_KEY))
    digest = hashlib.sha256(f"{part}:{checkpoint}".encode()).hexdigest()
    return RunIdentity(digest=digest, recipe_digest=part, checkpoint_sha256=checkpoint)


DERIVED_OUTPUTS: tuple[str, ...] = (
    "results.json",
    "sweep-*.json",
    "report.md",
    "report.html",
    "accuracy_vs_*.png",
    "exported",
    "tensorboard",
    "checkpoints",
    "train_log.csv",
    "epochs.csv",
)
"""What training and the experiments derive from a run, as glob patterns inside its directory: removed by
``slimtrain train --overwrite`` before the run is trained again."""


def remove_derived_outputs(run_dir: str | Path, patterns: tuple[str, ...] = DERIVED_OUTPUTS) -> list[Path]:
    """Delete the files and folders of ``run_dir`` matching ``patterns``; returns what was removed."""
    removed = []
    for pattern in patterns:
        for path in sorted(Path(run_dir).glob(pattern)):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed

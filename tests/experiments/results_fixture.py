"""Compare directories written from made-up sweep rows: report and select tests without any training."""

import json
from pathlib import Path

import yaml

RECIPE = {
    "data": {"name": "fashion-mnist"},
    "model": {"name": "lenet5"},
    "train": {"epochs": 7},
}


def row(
    recipe, method, seed, level, val, test, *, structure="unstructured", option=None, ratio=None, **extra
):
    """One sweep row; the uncompressed model's accuracies are the level-0 ones given in ``extra``."""
    return {
        "recipe": recipe,
        "method": method,
        "seed": seed,
        "structure": structure,
        "requested_level": level,
        "level_option": option,
        **({option: level} if option else {}),
        "run_identity": f"{recipe}-{seed}-{level if option else ''}",
        "epochs": 7,
        "acc_dense": extra.pop("acc_dense", 0.9),
        "val_acc_dense": extra.pop("val_acc_dense", 0.9),
        "acc_compressed_no_ft": test,
        "val_acc_compressed_no_ft": val,
        "sparsity_prunable": level,
        "storage_fraction_prunable": 1.0 - level,
        "compression_ratio_all": ratio if ratio is not None else 1.0 / (1.0 - level),
        "theoretical_speedup": 1.0 / (1.0 - level),
        **extra,
    }


def write_compare(directory: Path, rows: list[dict]) -> Path:
    """``directory/compare.json`` with ``rows``, and a recipe.yaml per recipe and seed (as compare leaves)."""
    directory.mkdir(parents=True, exist_ok=True)
    for r in rows:
        run = directory / r["recipe"] / f"seed{r['seed']}"
        run.mkdir(parents=True, exist_ok=True)
        (run / "recipe.yaml").write_text(yaml.safe_dump({"name": r["recipe"], **RECIPE}))
    recipes = sorted({r["recipe"] for r in rows})
    (directory / "compare.json").write_text(json.dumps({"recipes": recipes, "seeds": None, "rows": rows}))
    return directory

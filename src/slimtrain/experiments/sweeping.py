"""Sweep: evaluate ONE trained checkpoint at every requested compression level.

For each level the trained model is restored afresh (never compressed cumulatively), compressed by the
method's ``compress`` at that level, optionally has its BatchNorm statistics recalibrated (reported in a
separate column), is evaluated, and yields one row with accuracy, parameter/non-zero counts, MACs, every
ratio of ``spec/metrics.md`` and, when asked, measured latency. Rows are written after every level, so an
interrupted sweep continues without redoing finished levels.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimtrain.compress.exportable import to_exported
from slimtrain.data import BatchLoader
from slimtrain.errors import CheckpointError
from slimtrain.io import atomic_write_text
from slimtrain.metrics import count_parameters, measure_latency, summarize
from slimtrain.train.checkpoint import CheckpointStore
from slimtrain.train.config import load_recipe
from slimtrain.train.evaluate import evaluate
from slimtrain.train.method import Method
from slimtrain.train.trainer import RunComponents, build_run


def load_trained(run_dir: str | Path) -> RunComponents:
    """Rebuild a finished run's data, method and model, with the final trained weights loaded.

    Raises:
        CheckpointError: the run has no final checkpoint (it has not finished training).
    """
    run_dir = Path(run_dir)
    recipe = load_recipe(run_dir / "recipe.yaml")
    comp = build_run(recipe)
    loaded = CheckpointStore(run_dir / "checkpoints").load_latest(final_only=True)
    if loaded is None:
        raise CheckpointError(
            f"{run_dir} has no final checkpoint; train it to the end (or --resume it) first"
        )
    state, _ = loaded
    comp.method.load_state_dict(state["method"], comp.model)
    comp.model.load_state_dict(state["model"])
    comp.model.to(device=comp.device, dtype=comp.dtype).eval()
    return comp


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, comp: RunComponents, batches: int, batch_size: int) -> None:
    """Re-estimate BatchNorm running statistics on ``batches`` training batches (labels unused)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the calibration batches
    model.train()
    loader = BatchLoader(comp.splits.train, batch_size, shuffle=True, seed=0)
    for index, (inputs, _) in enumerate(loader):
        if index >= batches:
            break
        model(inputs.to(device=comp.device, dtype=comp.dtype))
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum
    model.eval()


def resolve_structure(method: Method, structure: str | None) -> str:
    """The structure a run is compressed with: ``structure``, else the recipe's evaluation structure.

    Methods that fix their level during training are always evaluated ``native``.

    Raises:
        ValueError: The method cannot compress with the structure.
    """
    structure = structure or method.recipe.evaluation.structure
    if method.levels_chosen == "during_training" and structure != "native":
        structure = "native"
    if structure != "native" and structure not in method.structures:
        raise ValueError(
            f"method '{method.name}' cannot compress with structure '{structure}'; "
            f"supported: {', '.join(method.structures)}, native"
        )
    return structure


def sweep_path(run_dir: str | Path, structure: str) -> Path:
    """File holding a run's sweep rows for one structure."""
    return Path(run_dir) / f"sweep-{structure}.json"


def _latency(model: nn.Module, example: torch.Tensor, batch: int) -> float:
    inputs = torch.zeros((batch, *example.shape[1:]), dtype=example.dtype, device=example.device)
    return measure_latency(model, inputs).median_ms


def sweep(
    run_dir: str | Path,
    *,
    structure: str | None = None,
    levels: list[float] | None = None,
    bn_recalibration: bool | None = None,
    latency: bool = False,
    latency_batch_sizes: tuple[int, ...] = (1, 256),
) -> list[dict[str, Any]]:
    """Evaluate the trained run in ``run_dir`` at each compression level and write ``sweep.json``.

    Args:
        run_dir: a finished run directory (``recipe.yaml`` and a final checkpoint).
        structure: ``unstructured``, ``filter``, ``lowrank`` or ``native``; default from the recipe.
        levels: fractions in [0, 1); default from the recipe, else the method's default levels.
        bn_recalibration: also report accuracy after recalibrating BatchNorm statistics; default from recipe.
        latency: measure the CPU latency of each level's exported model (channels removed, factorized
            layers in place; :func:`slimtrain.compress.exportable.to_exported`) and of the dense model
            (slow on a shared CPU). Rows then say ``latency_model_state: exported`` and carry
            ``params_stored_exported_all``, ``latency_ms_b{N}`` and ``measured_speedup_b{N}``.
        latency_batch_sizes: batch sizes for the latency measurement.

    Returns:
        One row per requested level (rows already in ``<run_dir>/sweep-<structure>.json`` from an earlier,
        possibly interrupted, sweep are reused, not recomputed); the file keeps every level swept so far.
    """
    run_dir = Path(run_dir)
    comp = load_trained(run_dir)
    recipe, method = comp.method.recipe, comp.method
    evaluation = recipe.evaluation
    structure = resolve_structure(method, structure)
    levels = levels if levels is not None else evaluation.levels or method.default_levels(structure)
    recalibrate = evaluation.bn_recalibration if bn_recalibration is None else bn_recalibration

    out_path = sweep_path(run_dir, structure)
    rows: list[dict[str, Any]] = json.loads(out_path.read_text())["rows"] if out_path.exists() else []
    done = {r["requested_level"] for r in rows}

    trained = comp.model
    example = comp.splits.test.inputs[:2].to(device=comp.device, dtype=comp.dtype)
    dense_test = evaluate(trained, comp.splits.test, device=comp.device, dtype=comp.dtype)["accuracy"]
    results_file = run_dir / "results.json"
    train_info = json.loads(results_file.read_text()) if results_file.exists() else {}
    dense_latency = {}
    if latency:
        dense = method.dense_reference(trained)  # a new model: `trained` keeps its own layers
        dense_latency = {b: _latency(dense, example, b) for b in latency_batch_sizes}
    for level in levels:
        if level in done:
            continue
        compressed = method.compress(copy.deepcopy(trained), structure, level, example)
        compressed.eval()
        test = evaluate(compressed, comp.splits.test, device=comp.device, dtype=comp.dtype)
        val = evaluate(compressed, comp.splits.val, device=comp.device, dtype=comp.dtype)
        row: dict[str, Any] = {
            "recipe": recipe.name,
            "method": method.name,
            "seed": recipe.seed,
            "structure": structure,
            "requested_level": level,
            **{k: train_info[k] for k in ("grad_evals", "train_seconds", "epochs") if k in train_info},
            "acc_dense": dense_test,
            "acc_compressed_no_ft": test["accuracy"],
            "val_acc_compressed_no_ft": val["accuracy"],
            "pruning_stability": 1.0 - (dense_test - test["accuracy"]) / dense_test
            if dense_test
            else float("nan"),
        }
        if recalibrate:
            recalibrate_batchnorm(
                compressed, comp, evaluation.bn_recalibration_batches, recipe.train.batch_size
            )
            row["acc_compressed_bn_recal"] = evaluate(
                compressed, comp.splits.test, device=comp.device, dtype=comp.dtype
            )["accuracy"]
        row.update(summarize(compressed, example, reference=trained))
        if latency:
            # Latency is a property of the deployed model: time the exported form, not the masked one.
            exported = to_exported(compressed, structure, example)
            row["latency_model_state"] = "exported"
            row["params_stored_exported_all"] = count_parameters(exported, "all").stored
        for batch, dense_ms in dense_latency.items():
            row[f"latency_ms_b{batch}"] = _latency(exported, example, batch)
            row[f"measured_speedup_b{batch}"] = dense_ms / row[f"latency_ms_b{batch}"]
        rows.append(row)
        rows.sort(key=lambda r: r["requested_level"])
        atomic_write_text(out_path, json.dumps({"run": str(run_dir), "rows": rows}, indent=1, default=float))
    return [r for r in rows if r["requested_level"] in levels]

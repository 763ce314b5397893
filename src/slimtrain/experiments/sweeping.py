"""Sweep: evaluate ONE trained checkpoint at every requested compression level.

For each level the trained model is restored afresh (never compressed cumulatively), compressed by the
method's ``compress`` at that level, optionally has its BatchNorm statistics recalibrated (reported in a
separate column), is evaluated, and yields one row with accuracy, parameter/non-zero counts, MACs, every
ratio of ``docs/metrics.md`` and, when asked, measured latency. Rows are written after every level, so an
interrupted sweep continues without redoing finished levels. Rows belong to one trained model: they are
keyed by its run identity (:mod:`slimtrain.train.identity`), structure, level and evaluation settings, and
only levels the method produces (:meth:`slimtrain.train.method.Method.levels`) are evaluated.
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.modules.conv import _ConvNd

from slimtrain.compress.exportable import ChannelsKeptWarning, to_exported
from slimtrain.compress.magnitude import population_parameters
from slimtrain.compress.standard import STRUCTURES
from slimtrain.compress.torch_pruning_adapter import coupled_channel_groups
from slimtrain.data import BatchLoader
from slimtrain.errors import BadInputError, CheckpointError
from slimtrain.io import atomic_write_text
from slimtrain.metrics import (
    LatencyResult,
    compressed_model_fields,
    count_parameters,
    latency_result_fields,
    measure_latency,
    summarize,
    upgrade_row,
)
from slimtrain.progress import Progress
from slimtrain.train.checkpoint import CheckpointStore
from slimtrain.train.config import load_stored_recipe
from slimtrain.train.evaluate import evaluate
from slimtrain.train.identity import run_identity
from slimtrain.train.method import Levels, Method
from slimtrain.train.trainer import RunComponents, build_run, load_checkpoint_state


def load_trained(run_dir: str | Path) -> RunComponents:
    """Rebuild a finished run's data, method and model, with the final trained weights loaded.

    Raises:
        CheckpointError: the run has no final checkpoint (it has not finished training).
    """
    run_dir = Path(run_dir)
    recipe = load_stored_recipe(run_dir / "recipe.yaml")
    comp = build_run(recipe, initial_weights=False)  # the final checkpoint replaces them
    loaded = CheckpointStore(run_dir / "checkpoints").load_latest(final_only=True)
    if loaded is None:
        raise CheckpointError(
            f"{run_dir} has no final checkpoint; train it to the end (or --resume it) first"
        )
    state, _ = loaded
    load_checkpoint_state(comp, state, recipe, run_dir / "checkpoints")
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
        BadInputError: The method cannot compress with the structure (a ``ValueError``).
    """
    structure = structure or method.recipe.evaluation.structure
    if method.levels_chosen == "during_training" and structure != "native":
        structure = "native"
    if structure != "native" and structure not in method.structures:
        raise BadInputError(
            f"method '{method.name}' of run '{method.recipe.name}' cannot compress with structure "
            f"'{structure}'; the structures it supports: {', '.join(method.structures)}, native"
        )
    return structure


def sweep_path(run_dir: str | Path, structure: str) -> Path:
    """File holding a run's sweep rows for one structure."""
    return Path(run_dir) / f"sweep-{structure}.json"


def _latency(model: nn.Module, example: torch.Tensor, batch: int) -> LatencyResult:
    inputs = torch.zeros((batch, *example.shape[1:]), dtype=example.dtype, device=example.device)
    return measure_latency(model, inputs)


def _exported_form(
    compressed: nn.Module, structure: str, example: torch.Tensor
) -> tuple[nn.Module, str | None]:
    """``to_exported(compressed, structure, example)``, the model a sweep row's counts describe.

    A ``native`` model whose zeroed channels the channel tracer fails on keeps them, with a warning (what
    ``to_exported`` does when it refuses the channel flow), rather than ending the sweep. The second value
    says why the channel removal was refused (by ``to_exported``, whose model ``slimtrain export`` saves,
    or by an error of it), ``None`` when it was not.
    """
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            exported = to_exported(compressed, structure, example)
    except Exception as error:  # the tracer's own errors, on models it does not understand
        if structure != "native":
            raise
        warnings.warn(f"zeroed channels are kept in the exported form: {error!r}", stacklevel=2)
        return to_exported(compressed, "lowrank", example), repr(error)  # without channel removal
    for caught_warning in caught:  # passed on, under the caller's filters
        warnings.warn(caught_warning.message, caught_warning.category, stacklevel=2)
    kept = [str(w.message) for w in caught if issubclass(w.category, ChannelsKeptWarning)]
    return exported, (kept[0] if kept else None)


def budget_fields(budget: int | None, refusal: str | None, level: Any) -> dict[str, int]:
    """``params_budget`` of a sweep row (docs/metrics.md), for a method that prunes to a parameter budget.

    The row's ``params_stored_all`` is what the export reaches; it is set beside the budget. When the export
    kept the zeroed channels, a warning says so (the stored count then includes them).

    Args:
        budget: :meth:`Method.params_budget` of the trained model (``None``: the method has no budget).
        refusal: Why the export kept the zeroed channels, or ``None``.
        level: The level, for the warning.
    """
    if budget is None:
        return {}
    if refusal is not None:
        warnings.warn(
            f"level {level}: the export keeps the zeroed channels ({refusal}), so params_stored_all counts "
            f"them, against a budget of {budget}",
            stacklevel=2,
        )
    return {"params_budget": budget}


def level_metrics(
    compressed: nn.Module, exported: nn.Module, example: torch.Tensor, dense: nn.Module
) -> dict[str, Any]:
    """The parameter, ratio and MAC fields of one compression level: sweep rows and ``slimtrain export``.

    One definition for both (docs/metrics.md): :func:`~slimtrain.metrics.summarize` of the *exported* model
    (channels removed, factorized layers in their deployment form, CSR layers as stored; its state inferred:
    ``masked`` while zeros stay in dense tensors) against the method's dense reference, so N_ref, the
    storage fractions, compression ratios, ``macs_dense`` and ``theoretical_speedup`` = ``macs_dense /
    macs_effective`` are the same for every structure; the fields that describe the compressed model as the
    method produced it (its zeros, trained ranks and DLRT eval rates:
    :func:`~slimtrain.metrics.compressed_model_fields`) are the compressed model's.

    Args:
        compressed: The method's compressed model at the level.
        exported: Its exported form (:func:`~slimtrain.compress.exportable.to_exported`, optionally CSR).
        example: A real input batch at the evaluation resolution.
        dense: The dense reference (``method.dense_reference(trained)``).
    """
    metrics = summarize(exported, example, reference=dense)
    own = compressed_model_fields(compressed)
    # Optional fields are the compressed model's alone (deployed layers may not carry ranks, for one).
    optional = ("sparsity_effective_prunable", "ranks_per_layer", "cr_percent_eval_dlrt_convention")
    for key in (*optional, "cr_percent_eval_factorized_only"):
        metrics.pop(key, None)
    return {**metrics, **own}


def describe_levels(levels: Levels) -> str:
    """The levels of one structure in words: ``any level in [0, 1)``, ``tau 0.1``, ``level 0``."""
    if levels.chosen_after_training:
        return "any level in [0, 1)"
    if not levels.values:
        return "the level its training set" + (f" (not through '{levels.option}')" if levels.option else "")
    values = ", ".join(f"{v:g}" for v in levels.values)
    return f"{levels.option} {values}" if levels.option else f"level {values}"


def produced_structures(method: Method) -> str:
    """Every structure a trained run of ``method`` produces, with its levels (for error messages)."""
    produced = ((s, method.levels(s)) for s in STRUCTURES)
    return "; ".join(f"{s}: {describe_levels(levels)}" for s, levels in produced if levels is not None)


def resolve_levels(
    method: Method, structure: str | None, levels: list[float] | None
) -> tuple[str, Levels, list[float | None]]:
    """The structure and levels a trained run is evaluated at, checked against :meth:`Method.levels`.

    ``structure`` defaults to the recipe's; a structure whose level training set is evaluated ``native``
    (the trained model as it is).
    ``levels`` default to the recipe's, else the method's defaults, for a structure whose level is chosen
    after training; to the run's own level for a structure whose level training set. The recipe's
    ``evaluation.levels`` are then the levels ``compare`` trains one run each at, not levels of this run.
    A run whose level training set through another option than the level option (a TT ``rank`` instead of
    ``storage_reduction``) has no value in the option's unit: it is evaluated as trained, at level 0, like
    the ``native`` structure of a method compressed after training (the returned :class:`Levels` say so).

    Raises:
        BadInputError: The method does not produce ``structure``, or not at one of ``levels``; the message
            names what it does produce.
    """
    if structure is None:
        structure = resolve_structure(method, None)
    declared = method.levels(structure)
    if declared is None:
        if method.levels_chosen == "after_training":
            resolve_structure(method, structure)  # refuses, naming the supported structures
        raise BadInputError(
            f"method '{method.name}' of run '{method.recipe.name}' does not produce structure "
            f"'{structure}'; it produces {produced_structures(method)}"
        )
    if not declared.chosen_after_training:  # training made the model: it is evaluated as it is
        structure = "native"
        if not declared.values:
            declared = Levels.set_by_training((0.0,))
    if levels is None:
        if declared.chosen_after_training:
            chosen = method.recipe.evaluation.levels or method.default_levels(structure)
        else:
            chosen = list(declared.values)
        return structure, declared, list(chosen)
    refused = [level for level in levels if not declared.admits(level)]
    if refused:
        raise BadInputError(_level_refusal(method, structure, declared, refused))
    return structure, declared, list(levels)


def _level_refusal(method: Method, structure: str, declared: Levels, refused: list[float]) -> str:
    asked = ", ".join(f"{level:g}" for level in refused)
    head = (
        f"method '{method.name}' of run '{method.recipe.name}' has no level {asked} of structure "
        f"'{structure}'"
    )
    if declared.chosen_after_training:
        return f"{head}: levels are fractions in [0, 1)"
    as_is = f"{head}: '{structure}' is the trained model as it is ({describe_levels(declared)})"
    if declared.option is None and method.levels_chosen == "after_training":
        others = ", ".join(method.structures)
        return f"{as_is}; " + (f"for other levels use --structure {others}" if others else "no other level")
    if declared.option is None:  # set by training through another option than the level option
        return (
            f"{as_is}: the method sets its level during training, this run through another option than "
            f"'{method.level_option}' (e.g. a rank); train another run for another level"
        )
    how = f"this run was trained at {describe_levels(declared)}"
    return (
        f"{head}: the method sets its level during training ({declared.option}), and {how}; sweep or "
        f"export it at that level (no --levels/--level), or train another run with --set "
        f"method.options.{declared.option}=LEVEL (compare trains one run per entry of evaluation.levels)"
    )


def level_fields(declared: Levels, level: float | None) -> dict[str, Any]:
    """What a row or an export records of its level besides ``requested_level``.

    A level set by training is recorded under the name of the option that set it (``"tau": 0.1``,
    ``"target": 0.9``), with ``level_option`` naming that option; ``level_option`` is ``None`` otherwise.
    """
    if declared.chosen_after_training or declared.option is None:
        return {"level_option": None}
    return {"level_option": declared.option, declared.option: level}


def level_label(structure: str, level: float | None, option: str | None) -> str:
    """A level as folders and tables name it: ``unstructured-0.5``, ``native-tau0.1``, ``native``."""
    if level is None:
        return structure
    return f"{structure}-{option or ''}{level:g}"


def check_compressible(model: nn.Module, structure: str, model_name: str, example: torch.Tensor) -> None:
    """Refuse a structure that has nothing to compress in ``model`` (the standard operators' populations).

    ``unstructured`` prunes conv and linear weights, ``filter`` removes conv filters (output channels whose
    removal the channel graph can follow), ``lowrank`` factorizes ``Conv2d`` layers.

    Raises:
        BadInputError: Saying what the structure acts on and that ``model`` has none of it.
    """
    convs = [m for m in model.modules() if isinstance(m, _ConvNd)]
    problem = None
    if structure == "unstructured" and not population_parameters(model):
        problem = "prunes conv and linear weights; model '{}' has no Conv or Linear layer"
    elif structure == "filter" and not convs:
        problem = "removes conv filters; model '{}' has no Conv2d"
    elif structure == "filter" and not coupled_channel_groups(model, example):
        problem = "removes conv filters; no conv filter of model '{}' can be removed (all reach the output)"
    elif structure == "lowrank" and not any(isinstance(m, nn.Conv2d) for m in convs):
        problem = "factorizes conv layers; model '{}' has no Conv2d"
    if problem is not None:
        raise BadInputError(f"structure '{structure}' " + problem.format(model_name))


def evaluation_settings(
    recalibrate: bool, recalibration_batches: int, latency: bool, latency_batch_sizes: tuple[int, ...]
) -> dict[str, Any]:
    """The evaluation settings a sweep row is computed with, part of its key (see :func:`sweep`)."""
    return {
        "bn_recalibration": bool(recalibrate),
        "bn_recalibration_batches": int(recalibration_batches) if recalibrate else None,
        "latency_batch_sizes": [int(b) for b in latency_batch_sizes] if latency else [],
    }


def stored_rows(path: Path, identity: str) -> list[dict[str, Any]]:
    """The rows of the sweep file ``path`` if it belongs to the run identity ``identity``, else none.

    A file of another identity (the run was trained again, or by a version that recorded none) holds
    results of another model: none of its rows is reused, and the next row written replaces the file.
    """
    if not path.exists():
        return []
    data = json.loads(path.read_text())
    if data.get("run_identity") != identity:
        return []
    return [row for row in data["rows"] if row.get("run_identity") == identity]


def _level_name(level: float | None, option: str | None) -> str:
    """A level for progress lines: ``0.9``, ``tau 0.1``."""
    if level is None:
        return "as trained"
    return f"{option} {level:g}" if option else f"{level:g}"


def _level_order(row: dict[str, Any]) -> tuple[bool, float]:
    level = row["requested_level"]
    return (level is None, 0.0 if level is None else level)


def sweep(
    run_dir: str | Path,
    *,
    structure: str | None = None,
    levels: list[float] | None = None,
    bn_recalibration: bool | None = None,
    latency: bool = False,
    latency_batch_sizes: tuple[int, ...] = (1, 256),
    bn_recalibration_batches: int | None = None,
    progress: bool | None = None,
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
            ``params_stored_exported_all`` and the fields of
            :func:`~slimtrain.metrics.latency_result_fields`: ``latency_ms_b{N}``, ``latency_iqr_ms_b{N}``,
            ``measured_speedup_b{N}`` and its quartiles ``measured_speedup_q1_b{N}``/``_q3_b{N}``.
        latency_batch_sizes: batch sizes for the latency measurement.
        bn_recalibration_batches: training batches of the recalibration; default from the recipe.
        progress: show level k/N, elapsed time and an ETA (:class:`slimtrain.progress.Progress`: a bar on a
            terminal, plain lines otherwise); default the recipe's ``train.progress``.

    Returns:
        One row per requested level. Each row records the run identity
        (:func:`slimtrain.train.identity.run_identity`) and its ``evaluation_settings`` (BatchNorm
        recalibration and its batches, latency batch sizes): a row already in
        ``<run_dir>/sweep-<structure>.json`` (an earlier, possibly interrupted, sweep) is reused only when
        its identity, structure, level and settings are the requested ones, and recomputed otherwise. The
        file holds the rows of one identity, one per level swept so far; a file of another identity is
        replaced. A level set by training is also recorded under its option's name (``"tau": 0.1``) with
        ``level_option``; a method with a parameter budget (:meth:`Method.params_budget`) adds
        ``params_budget`` (:func:`budget_fields`), next to the exported ``params_stored_all``. Levels the
        method does not produce are refused (:func:`resolve_levels`), and so is a structure with nothing to
        compress in the model (:func:`check_compressible`).

    Raises:
        BadInputError: A structure or level the run does not produce, or one with nothing to compress.
        CheckpointError: The run has not finished training.
    """
    run_dir = Path(run_dir)
    comp = load_trained(run_dir)
    recipe, method = comp.method.recipe, comp.method
    evaluation = recipe.evaluation
    structure, declared, levels = resolve_levels(method, structure, levels)
    recalibrate = evaluation.bn_recalibration if bn_recalibration is None else bn_recalibration
    batches = bn_recalibration_batches or evaluation.bn_recalibration_batches
    settings = evaluation_settings(recalibrate, batches, latency, latency_batch_sizes)
    identity = run_identity(run_dir, recipe)
    assert identity is not None  # load_trained found the final checkpoint

    out_path = sweep_path(run_dir, structure)
    rows = [upgrade_row(r) for r in stored_rows(out_path, identity.digest)]
    budget = method.params_budget(comp.model)  # the same at every level: the run's own target
    # A row written before rows recorded the trained model's validation accuracy (or a budgeted method's
    # exported count) is computed again.
    done = {
        r["requested_level"]
        for r in rows
        if r.get("evaluation_settings") == settings
        and "val_acc_dense" in r
        and (budget is None or "params_budget" in r)
    }

    trained = comp.model
    example = comp.splits.test.inputs[:2].to(device=comp.device, dtype=comp.dtype)
    dense_test = evaluate(trained, comp.splits.test, device=comp.device, dtype=comp.dtype)["accuracy"]
    dense_val = evaluate(trained, comp.splits.val, device=comp.device, dtype=comp.dtype)["accuracy"]
    results_file = run_dir / "results.json"
    train_info = json.loads(results_file.read_text()) if results_file.exists() else {}
    if train_info.get("run_identity", identity.digest) != identity.digest:
        train_info = {}  # the results of another training of this directory
    if declared.chosen_after_training:
        check_compressible(trained, structure, recipe.model.label, example)
    dense = method.dense_reference(trained)  # a new model: `trained` keeps its own layers
    dense_latency = {b: _latency(dense, example, b) for b in latency_batch_sizes} if latency else {}
    todo = [level for level in levels if level not in done]
    shown = recipe.train.progress if progress is None else progress
    with Progress(len(todo), f"sweep {recipe.name} ({structure})", "level", enabled=shown) as bar:
        for level in todo:
            bar.step(_level_name(level, declared.option))
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
                **level_fields(declared, level),
                "run_identity": identity.digest,
                "evaluation_settings": settings,
                **{k: train_info[k] for k in ("grad_evals", "train_seconds", "epochs") if k in train_info},
                "acc_dense": dense_test,
                "val_acc_dense": dense_val,
                "acc_compressed_no_ft": test["accuracy"],
                "val_acc_compressed_no_ft": val["accuracy"],
                "pruning_stability": 1.0 - (dense_test - test["accuracy"]) / dense_test
                if dense_test
                else float("nan"),
            }
            if recalibrate:
                recalibrate_batchnorm(compressed, comp, batches, recipe.train.batch_size)
                row["acc_compressed_bn_recal"] = evaluate(
                    compressed, comp.splits.test, device=comp.device, dtype=comp.dtype
                )["accuracy"]
            # The numbers of the deployed model, as `slimtrain export` reports them (one definition).
            exported, refusal = _exported_form(compressed, structure, example)
            row.update(level_metrics(compressed, exported, example, dense))
            row.update(budget_fields(budget, refusal, level))
            if latency:
                # Latency is a property of the deployed model: time the exported form, not the masked one.
                row["latency_model_state"] = "exported"
                row["params_stored_exported_all"] = count_parameters(exported, "all").stored
            for batch, dense_result in dense_latency.items():
                row.update(latency_result_fields(_latency(exported, example, batch), dense_result))
            rows = [r for r in rows if r["requested_level"] != level]  # computed with other settings
            rows.append(row)
            rows.sort(key=_level_order)
            atomic_write_text(
                out_path,
                json.dumps(
                    {"run": str(run_dir), "run_identity": identity.digest, "rows": rows},
                    indent=1,
                    default=float,
                ),
            )
    return [r for r in rows if r["requested_level"] in levels and r["evaluation_settings"] == settings]

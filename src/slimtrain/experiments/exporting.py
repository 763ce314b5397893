"""Export one trained run at one compression level as a physically smaller model on disk.

The trained run is rebuilt (:func:`~slimtrain.experiments.sweeping.load_trained`), compressed by its method's
``compress`` at the level, turned into the exported model (:func:`slimtrain.compress.exportable.to_exported`:
channels removed, factorized layers in place, masks folded, optionally CSR), checked to compute the
compressed model's outputs on a test batch, and saved with :func:`slimtrain.compress.save_exported`. The
manifest records the base model — its registry name, or the import path of a recipe's ``model.factory`` — with
the keyword arguments it was built with, so :func:`slimtrain.load` rebuilds it without the run, the recipe or
pickled classes.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from slimtrain.compress.csr import to_sparse_linear
from slimtrain.compress.exportable import check_same_outputs, to_exported
from slimtrain.compress.exported_format import save_exported
from slimtrain.compress.onnx_export import export_onnx
from slimtrain.errors import BadInputError
from slimtrain.experiments.sweeping import (
    budget_fields,
    check_compressible,
    describe_levels,
    level_fields,
    level_label,
    level_metrics,
    load_trained,
    resolve_levels,
)
from slimtrain.metrics import count_parameters, latency_fields
from slimtrain.progress import Progress
from slimtrain.train.evaluate import evaluate
from slimtrain.train.identity import run_identity
from slimtrain.train.trainer import base_model

if TYPE_CHECKING:
    from slimtrain.data import DatasetSplits

ONNX_FILE = "model.onnx"
CSR_MIN_SPARSITY = 0.5
"""With ``sparse_linear``, linear layers with at least this fraction of zero weights are stored as CSR."""
CHECK_BATCH = 64
"""Test inputs the exported model's outputs are compared on."""


@dataclass
class ExportResult:
    """What :func:`export_run` wrote and measured.

    Attributes:
        path: The exported-model directory (``model.safetensors`` + ``manifest.json``).
        onnx_path: The checked ONNX file inside it, when asked for.
        structure: The structure the run was compressed with (``native`` for a level set by training).
        level: The compression level; for a level set by training, the value of the method option that set
            it (``None`` when another option set it, e.g. a TT rank).
        max_abs_error: Largest output difference between exported and compressed model on the check batch.
        acc_compressed: Test accuracy of the compressed model.
        acc_exported: Test accuracy of the exported model.
        metrics: :func:`~slimtrain.experiments.sweeping.level_metrics` of the model as saved (CSR layers
            included): the fields of a sweep row at this level, ``params_stored_all`` the count
            ``slimtrain inspect`` prints; N_ref and ``macs_dense`` from the dense model.
        params_dense_reference: Parameters of the dense model (N_ref of the compression ratios).
        latency: :func:`slimtrain.metrics.latency_fields` of the exported model against the dense one
            (CPU): ``latency_ms_b{N}`` (median), ``latency_iqr_ms_b{N}``, ``measured_speedup_b{N}`` and
            its quartiles ``measured_speedup_q1_b{N}``, ``measured_speedup_q3_b{N}``.
        level_option: The method option that set the level during training (``tau``, ``target``), if any.
        params_budget: The parameter budget a structured method pruned to (:meth:`Method.params_budget`),
            for comparison with ``metrics["params_stored_all"]``; ``None`` for a method without one.
    """

    path: Path
    onnx_path: Path | None
    structure: str
    level: float | None
    max_abs_error: float
    acc_compressed: float
    acc_exported: float
    metrics: dict[str, Any]
    params_dense_reference: int
    latency: dict[str, float] = field(default_factory=dict)
    level_option: str | None = None
    params_budget: int | None = None


STANDARD_CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "digits": tuple(str(d) for d in range(10)),
    "mnist": tuple(str(d) for d in range(10)),
    "fashion-mnist": (
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
}  # fmt: skip
"""Class names (index order) of the built-in datasets whose labels have standard names."""


def input_preprocessing(splits: DatasetSplits, input_dtype: torch.dtype) -> dict[str, Any]:
    """How inputs must be prepared for a model trained on ``splits``, as recorded in an export's manifest.

    The model was trained on ``(x - mean[c]) / std[c]`` per channel c, where x is the dataset's raw input
    (image pixels scaled to [0, 1]: digits' 0..16 intensities / 16, 8-bit images / 255), laid out NCHW.

    Returns:
        ``{"dataset", "layout": "NCHW", "input_shape": [C, H, W], "channels", "input_dtype", "mean",
        "std", "normalize", "num_classes", "class_names"}``; ``class_names`` (index order) is ``None`` unless
        the dataset is one of :data:`STANDARD_CLASS_NAMES` with that many classes.
    """
    names = STANDARD_CLASS_NAMES.get(splits.name)
    return {
        "dataset": splits.name,
        "layout": "NCHW",
        "input_shape": list(splits.input_shape),
        "channels": splits.input_shape[0],
        "input_dtype": str(input_dtype).removeprefix("torch."),
        "mean": [float(m) for m in splits.mean],
        "std": [float(s) for s in splits.std],
        "normalize": "(x - mean[c]) / std[c] per channel c",
        "num_classes": splits.num_classes,
        "class_names": list(names) if names is not None and len(names) == splits.num_classes else None,
    }


def default_export_dir(
    run_dir: str | Path, structure: str, level: float | None, option: str | None = None
) -> Path:
    """Where :func:`export_run` writes by default: ``<run_dir>/exported/<structure>-<level>``.

    A level set by training is named after its option: ``native-tau0.1``, ``native-target0.9``
    (:func:`~slimtrain.experiments.sweeping.level_label`).
    """
    return Path(run_dir) / "exported" / level_label(structure, level, option)


def export_run(
    run_dir: str | Path,
    level: float | None = None,
    *,
    structure: str | None = None,
    output: str | Path | None = None,
    onnx: bool = False,
    round_to: int | None = None,
    sparse_linear: bool = False,
    latency_batch_sizes: tuple[int, ...] = (1, 256),
    overwrite: bool = False,
    progress: bool | None = None,
) -> ExportResult:
    """Compress the trained run in ``run_dir`` at ``level`` and save the exported model.

    Args:
        run_dir: A finished run directory.
        level: Compression level in [0, 1) (sparsity, fraction of channels, fraction of rank removed) of a
            structure whose level is chosen after training (required there). For a method that sets its
            level during training only the run's own level is accepted, and ``None`` means it.
        structure: ``unstructured``, ``filter``, ``lowrank`` or ``native``; default the recipe's.
        output: Directory to write; default :func:`default_export_dir`.
        onnx: Also write ``model.onnx`` into it, checked against onnxruntime.
        round_to: Filter structure: round every thinned width up to a multiple of this.
        sparse_linear: Store linear layers with at least 50% zeros as CSR (smaller; not faster on CPU).
            The stored count then holds the CSR values (not their index arrays, which are buffers); the
            ratios are a sweep row's (masked convention: N_stored = non-zeros).
        latency_batch_sizes: Batch sizes of the CPU latency measurement (none: no measurement).
        overwrite: Replace an existing output directory.
        progress: show stage k/N (compress, check, evaluate, save, ONNX, latency) with an ETA
            (:class:`slimtrain.progress.Progress`); default the recipe's ``train.progress``.

    Returns:
        The :class:`ExportResult`.

    Raises:
        BadInputError: A level outside [0, 1), a structure or level the run does not produce (naming
            those it does), or a structure with nothing to compress in the model (a ``ValueError``).
        CheckpointError: The run has not finished training.
        ExportMismatchError: The exported model's outputs differ from the compressed model's.
        UnsupportedChannelFlowError: Filter structure on a model whose channels cannot be removed.
        ExportFormatError: The exported model cannot be described by the save format.
        OnnxMismatchError: onnxruntime's outputs differ from PyTorch's.
        FileExistsError: ``output`` exists and ``overwrite`` is false.
    """
    if level is not None and not 0.0 <= level < 1.0:
        raise BadInputError(f"level must be in [0, 1), got {level!r}")
    run_dir = Path(run_dir)
    comp = load_trained(run_dir)
    recipe, method = comp.method.recipe, comp.method
    structure, declared, chosen = resolve_levels(method, structure, None if level is None else [level])
    if declared.chosen_after_training and level is None:
        raise BadInputError(
            f"export of structure '{structure}' of method '{method.name}' needs a level "
            f"({describe_levels(declared)}): pass --level"
        )
    level = chosen[0]  # the run's own level when training set it
    fields = level_fields(declared, level)
    out_dir = (
        Path(output)
        if output is not None
        else default_export_dir(run_dir, structure, level, fields["level_option"])
    )
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir} exists; pass --overwrite to replace it")

    def to_device(x: torch.Tensor) -> torch.Tensor:
        return x.to(device=comp.device, dtype=comp.dtype)

    example = to_device(comp.splits.test.inputs[:2])
    check_inputs = to_device(comp.splits.test.inputs[:CHECK_BATCH])
    if declared.chosen_after_training:
        check_compressible(comp.model, structure, recipe.model.label, example)
    stages = 4 + bool(onnx) + bool(latency_batch_sizes)
    what = f"export {recipe.name} {level_label(structure, level, fields['level_option'])}"
    shown = recipe.train.progress if progress is None else progress
    with Progress(stages, what, "stage", enabled=shown, every_s=0.0) as bar:
        bar.step("compress")
        compressed = method.compress(copy.deepcopy(comp.model), structure, level, example).eval()
        exported = to_exported(compressed, structure, example, round_to=round_to)
        dense = comp.method.dense_reference(comp.model)
        if sparse_linear:
            exported = to_sparse_linear(exported, min_sparsity=CSR_MIN_SPARSITY)
        # The model as saved (CSR values counted as stored), with the definitions of a sweep row.
        metrics = level_metrics(compressed, exported, example, dense)
        bar.step("check outputs")
        error = check_same_outputs(compressed, exported, check_inputs)
        bar.step("evaluate")
        acc_compressed = evaluate(compressed, comp.splits.test, device=comp.device, dtype=comp.dtype)
        acc_exported = evaluate(exported, comp.splits.test, device=comp.device, dtype=comp.dtype)

        channels, height, _ = comp.splits.input_shape
        base, base_kwargs = base_model(recipe, comp.splits)  # what the run's model was built from
        extra = {
            "run": run_dir.name,
            "method": method.name,
            "structure": structure,
            "level": level,
            **fields,
            "run_identity": run_identity(run_dir, recipe).digest,
            "round_to": round_to,
            "sparse_linear": sparse_linear,
            "acc_test_compressed": acc_compressed["accuracy"],
            "acc_test_exported": acc_exported["accuracy"],
            "max_abs_error_vs_compressed": error,
            "input_shape": [channels, height, comp.splits.input_shape[2]],
            "model_state": metrics["model_state"],
            "params_stored_all": metrics["params_stored_all"],
            "compression_ratio_all": metrics["compression_ratio_all"],
            "macs_effective": metrics["macs_effective"],
            "theoretical_speedup": metrics.get("theoretical_speedup"),
            # None: the export's own ChannelsKeptWarning already reached the user.
            **budget_fields(method.params_budget(comp.model), None, level),
        }
        preprocessing = input_preprocessing(comp.splits, example.dtype)
        bar.step("save")
        path = save_exported(
            exported,
            out_dir,
            base=base,
            base_kwargs=base_kwargs,
            recipe=recipe.model_dump(mode="json"),
            manifest_extra=extra,
            preprocessing=preprocessing,
            overwrite=overwrite,
        )
        onnx_path = None
        if onnx:
            bar.step("ONNX")
            onnx_path = export_onnx(exported, example, path / ONNX_FILE, preprocessing=preprocessing)
        latency: dict[str, float] = {}
        if latency_batch_sizes:
            bar.step("latency")
            inputs = [torch.zeros((b, *example.shape[1:]), dtype=example.dtype) for b in latency_batch_sizes]
            latency = latency_fields(
                exported.cpu(),
                inputs,
                reference=dense.cpu(),
                theoretical_speedup=metrics.get("theoretical_speedup"),
            )
    return ExportResult(
        path=path,
        onnx_path=onnx_path,
        structure=structure,
        level=level,
        max_abs_error=error,
        acc_compressed=acc_compressed["accuracy"],
        acc_exported=acc_exported["accuracy"],
        metrics=metrics,
        params_dense_reference=count_parameters(dense, "all").dense,
        latency=latency,
        level_option=fields["level_option"],
        params_budget=extra.get("params_budget"),
    )

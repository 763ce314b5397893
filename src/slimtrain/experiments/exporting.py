"""Export one trained run at one compression level as a physically smaller model on disk.

The trained run is rebuilt (:func:`~slimtrain.experiments.sweeping.load_trained`), compressed by its method's
``compress`` at the level, turned into the exported model (:func:`slimtrain.compress.exportable.to_exported`:
channels removed, factorized layers in place, masks folded, optionally CSR), checked to compute the
compressed model's outputs on a test batch, and saved with :func:`slimtrain.compress.save_exported`. The
manifest records the base model's registry name and keyword arguments, so :func:`slimtrain.load` rebuilds it
without the run, the recipe or pickled classes.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from slimtrain.compress.csr import to_sparse_linear
from slimtrain.compress.exportable import check_same_outputs, to_exported
from slimtrain.compress.exported_format import save_exported
from slimtrain.compress.onnx_export import export_onnx
from slimtrain.experiments.sweeping import load_trained, resolve_structure
from slimtrain.metrics import count_parameters, latency_fields, summarize
from slimtrain.train.evaluate import evaluate

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
        structure: The structure the run was compressed with.
        level: The compression level.
        max_abs_error: Largest output difference between exported and compressed model on the check batch.
        acc_compressed: Test accuracy of the compressed model.
        acc_exported: Test accuracy of the exported model.
        metrics: :func:`slimtrain.metrics.summarize` fields of the exported model (``model_state``
            ``exported``, or ``masked`` with CSR storage; N_ref and ``macs_dense`` from the dense model).
        params_dense_reference: Parameters of the dense model (N_ref of the compression ratios).
        latency: ``latency_ms_b{N}`` and ``measured_speedup_b{N}`` of the exported model (CPU, medians).
    """

    path: Path
    onnx_path: Path | None
    structure: str
    level: float
    max_abs_error: float
    acc_compressed: float
    acc_exported: float
    metrics: dict[str, Any]
    params_dense_reference: int
    latency: dict[str, float] = field(default_factory=dict)


def default_export_dir(run_dir: str | Path, structure: str, level: float) -> Path:
    """Where :func:`export_run` writes by default: ``<run_dir>/exported/<structure>-<level>``."""
    return Path(run_dir) / "exported" / f"{structure}-{level:g}"


def export_run(
    run_dir: str | Path,
    level: float,
    *,
    structure: str | None = None,
    output: str | Path | None = None,
    onnx: bool = False,
    round_to: int | None = None,
    sparse_linear: bool = False,
    latency_batch_sizes: tuple[int, ...] = (1, 256),
    overwrite: bool = False,
) -> ExportResult:
    """Compress the trained run in ``run_dir`` at ``level`` and save the exported model.

    Args:
        run_dir: A finished run directory.
        level: Compression level in [0, 1) (sparsity, fraction of channels, fraction of rank removed).
        structure: ``unstructured``, ``filter``, ``lowrank`` or ``native``; default the recipe's.
        output: Directory to write; default :func:`default_export_dir`.
        onnx: Also write ``model.onnx`` into it, checked against onnxruntime.
        round_to: Filter structure: round every thinned width up to a multiple of this.
        sparse_linear: Store linear layers with at least 50% zeros as CSR (smaller; not faster on CPU).
            Parameter counts are then the masked convention's (non-zeros), which is what CSR stores.
        latency_batch_sizes: Batch sizes of the CPU latency measurement (none: no measurement).
        overwrite: Replace an existing output directory.

    Returns:
        The :class:`ExportResult`.

    Raises:
        ValueError: A level outside [0, 1) or a structure the method cannot compress with.
        CheckpointError: The run has not finished training.
        ExportMismatchError: The exported model's outputs differ from the compressed model's.
        UnsupportedChannelFlowError: Filter structure on a model whose channels cannot be removed.
        ExportFormatError: The exported model cannot be described by the save format.
        OnnxMismatchError: onnxruntime's outputs differ from PyTorch's.
        FileExistsError: ``output`` exists and ``overwrite`` is false.
    """
    if not 0.0 <= level < 1.0:
        raise ValueError(f"level must be in [0, 1), got {level!r}")
    run_dir = Path(run_dir)
    comp = load_trained(run_dir)
    recipe, method = comp.method.recipe, comp.method
    structure = resolve_structure(method, structure)
    out_dir = Path(output) if output is not None else default_export_dir(run_dir, structure, level)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir} exists; pass --overwrite to replace it")

    def to_device(x: torch.Tensor) -> torch.Tensor:
        return x.to(device=comp.device, dtype=comp.dtype)

    example = to_device(comp.splits.test.inputs[:2])
    check_inputs = to_device(comp.splits.test.inputs[:CHECK_BATCH])
    compressed = method.compress(copy.deepcopy(comp.model), structure, level, example).eval()
    exported = to_exported(compressed, structure, example, round_to=round_to)
    dense = comp.method.dense_reference(comp.model)
    # A CSR layer stores exactly the non-zeros (plus indices), which is what the masked convention counts.
    metrics = summarize(
        exported, example, reference=dense, model_state="masked" if sparse_linear else "exported"
    )
    if sparse_linear:
        exported = to_sparse_linear(exported, min_sparsity=CSR_MIN_SPARSITY)
    error = check_same_outputs(compressed, exported, check_inputs)
    acc_compressed = evaluate(compressed, comp.splits.test, device=comp.device, dtype=comp.dtype)
    acc_exported = evaluate(exported, comp.splits.test, device=comp.device, dtype=comp.dtype)

    channels, height, _ = comp.splits.input_shape
    base_kwargs = {
        "num_classes": comp.splits.num_classes,
        "in_channels": channels,
        "image_size": height,
        **recipe.model.kwargs,
    }
    extra = {
        "run": run_dir.name,
        "method": method.name,
        "structure": structure,
        "level": level,
        "round_to": round_to,
        "sparse_linear": sparse_linear,
        "acc_test_compressed": acc_compressed["accuracy"],
        "acc_test_exported": acc_exported["accuracy"],
        "max_abs_error_vs_compressed": error,
        "input_shape": [channels, height, comp.splits.input_shape[2]],
        "params_stored_all": metrics["params_stored_all"],
        "macs_effective": metrics["macs_effective"],
    }
    path = save_exported(
        exported,
        out_dir,
        base=recipe.model.name,
        base_kwargs=base_kwargs,
        recipe=recipe.model_dump(mode="json"),
        manifest_extra=extra,
        overwrite=overwrite,
    )
    onnx_path = export_onnx(exported, example, path / ONNX_FILE) if onnx else None
    latency: dict[str, float] = {}
    if latency_batch_sizes:
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
    )

"""ONNX export of exported models, checked against onnxruntime."""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimtrain._materialized import refuse_unmaterialized
from slimtrain._model_io import (
    ModelInputs,
    Tolerance,
    call_model,
    compare_outputs,
    flatten_tensors,
    input_tensors,
    split_inputs,
)
from slimtrain._wrappers import unwrap_model
from slimtrain.compress._modules import copy_model, set_submodule
from slimtrain.compress.exported_format import PREPROCESSING_ATTR
from slimtrain.errors import OnnxMismatchError, UnsupportedModelError
from slimtrain.io import apply_umask
from slimtrain.layers import SparseLinear

PREPROCESSING_METADATA_KEY = "slimtrain.preprocessing"
"""Key of the ONNX file's ``metadata_props`` entry holding the input preprocessing as JSON (onnxruntime:
``session.get_modelmeta().custom_metadata_map``)."""

# Warnings of the exporter stack about its own internals, which a user of slimtrain cannot act on; they are
# silenced only around the export and the check (never globally), by category and module or message.
_EXPORTER_WARNINGS: tuple[tuple[type[Warning], str, str], ...] = (
    # torch.utils._pytree's deprecation of LeafSpec, raised from torch.export's own pytree handling.
    (FutureWarning, r"`isinstance\(treespec, LeafSpec\)` is deprecated", ""),
    # Deprecations inside the exporter and its ONNX libraries.
    (DeprecationWarning, "", r"(torch\.onnx|onnxscript|onnx_ir|onnx|onnxruntime)(\.|$)"),
    (FutureWarning, "", r"(torch\.onnx|onnxscript|onnx_ir|onnx|onnxruntime)(\.|$)"),
    # Several inputs sharing the one batch dimension: the exporter names the axis once and says so.
    (UserWarning, r"# The axis name: .* will not be used, since it shares the same shape constraints", ""),
)
# Log records of the exporter that do not concern the model being exported (logger name → message prefix).
_EXPORTER_LOG_NOISE = {
    # Logged once per torchvision operator when torchvision is not installed; a slimtrain model has none.
    "torch.onnx._internal.exporter._registration": "torchvision is not installed",
}


class _DropMessages(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter stack's warnings and log records listed above, for the duration of the block."""
    filters = [
        (logging.getLogger(name), _DropMessages(prefix)) for name, prefix in _EXPORTER_LOG_NOISE.items()
    ]
    with warnings.catch_warnings():
        for category, message, module in _EXPORTER_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=category, module=module)
        for logger, log_filter in filters:
            logger.addFilter(log_filter)
        try:
            yield
        finally:
            for logger, log_filter in filters:
                logger.removeFilter(log_filter)


def export_onnx(
    model: nn.Module,
    example_input: ModelInputs,
    path: str | os.PathLike[str],
    *,
    dynamic_batch: bool = True,
    opset_version: int | None = None,
    verify: bool = True,
    rtol: float | None = None,
    atol: float | None = None,
    preprocessing: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Export ``model`` (in eval mode) to a single ONNX file and check it with onnxruntime.

    :class:`SparseLinear` layers are exported as dense linears (the ONNX standard has no CSR matrix product).
    The file is written under a temporary name and renamed into place, with the mode a plain ``open`` would
    give it under the process umask. Warnings and log messages of the exporter stack about its own
    internals (deprecations inside ``torch.onnx``, ``onnxscript``, ``onnx_ir``; missing torchvision) are
    silenced during the call; the model's own warnings are not.

    Args:
        model: The exported model (unchanged; a copy is exported). A ``DistributedDataParallel`` or
            ``torch.compile`` wrapper is unwrapped.
        example_input: One input batch, used for tracing and for the check: a tensor, a tuple of positional
            inputs or a dict of keyword inputs (e.g. ``input_ids`` and ``attention_mask``); each input
            tensor becomes one graph input, in that order (docs/export.md#model-inputs-and-outputs).
        path: Output ``.onnx`` file.
        dynamic_batch: Let the batch dimension (the first) of every input tensor vary in the ONNX graph.
        opset_version: ONNX opset; the exporter's default when None.
        verify: Run the file with onnxruntime on ``example_input`` and compare every output tensor with
            PyTorch's, flattened in pytree order (a dict or ``ModelOutput`` in key order).
        rtol: Relative tolerance of the check; default by the outputs' dtype (:func:`default_tolerance`:
            1e-4 in float32, 10 machine epsilons in half precision).
        atol: Absolute tolerance of the check, scaled by max(1, max|output|); default by the outputs' dtype
            (1e-5 in float32, 10 machine epsilons in half precision).
        preprocessing: How inputs must be prepared (see :func:`~slimtrain.compress.save_exported`), stored
            as JSON in the file's ``metadata_props`` under :data:`PREPROCESSING_METADATA_KEY`; default the
            model's ``slimtrain_preprocessing`` attribute (a model from ``load_exported``) when it has one.
        metadata: Further ``metadata_props`` entries (values that are not strings are stored as JSON).

    Returns:
        The path of the ONNX file.

    Raises:
        OnnxMismatchError: If ``verify`` and the outputs differ (the file is not written then).
        UnsupportedModelError: If ``verify`` and the model's output holds no tensor to compare, or if
            ``torch.onnx`` (through ``torch.export``) cannot export the model; the message gives the cause.
            Also, at the call, a parameter or buffer without values (``meta`` device, lazy module), and with
            ``verify`` a ``bfloat16`` parameter, buffer or input, which onnxruntime's CPU provider cannot run.
    """
    path = Path(path)
    model = unwrap_model(model)  # the graph of the user's model, not of its DDP / torch.compile wrapper
    refuse_unmaterialized(model, "export_onnx")
    if verify:
        _refuse_unverifiable(model, example_input)
    exported = copy_model(model, "export_onnx").eval()
    for name, module in list(exported.named_modules()):
        if isinstance(module, SparseLinear):
            set_submodule(exported, name, module.to_dense())
    args, kwargs = split_inputs(example_input)
    dynamic_shapes = _batch_dynamic(exported, args, kwargs) if dynamic_batch else None
    if preprocessing is None:
        preprocessing = getattr(model, PREPROCESSING_ATTR, None)
    properties = {
        str(key): value if isinstance(value, str) else json.dumps(value)
        for key, value in (metadata or {}).items()
    }
    if preprocessing is not None:
        properties[PREPROCESSING_METADATA_KEY] = json.dumps(dict(preprocessing))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".onnx", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with torch.no_grad(), _quiet_exporter():
            try:
                program = torch.onnx.export(
                    exported,
                    args,
                    kwargs=kwargs,
                    dynamo=True,
                    dynamic_shapes=dynamic_shapes,
                    opset_version=opset_version,
                    verbose=False,
                )
            except Exception as error:  # torch.export's many error types: the model is what it refuses
                raise UnsupportedModelError(
                    f"torch.onnx cannot export {type(model).__name__}: {_export_failure(error)}; an output "
                    "that is not a tensor (a Hugging Face cache: call it with use_cache=False) or "
                    "data-dependent control flow in forward are the usual causes"
                ) from error
            expected = call_model(exported, example_input)
            program.model.metadata_props.update(properties)
            program.save(str(tmp), external_data=False)
            if verify:
                default = default_tolerance(expected)
                tolerance = Tolerance(
                    rtol=default.rtol if rtol is None else rtol, atol=default.atol if atol is None else atol
                )
                _check_onnxruntime(tmp, path, example_input, expected, tolerance)
        apply_umask(tmp)  # mkstemp made it owner-only
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _export_failure(error: BaseException) -> str:
    """The root cause of a torch.export failure, in one line."""
    while error.__cause__ is not None:
        error = error.__cause__
    return f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"[:300]


def _batch_dynamic(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Dynamic shapes by ``forward``'s argument name: one batch dimension shared by every input tensor."""
    batch = torch.export.Dim("batch", min=1)

    def spec(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return {0: batch}
        if isinstance(value, Mapping):
            return {k: spec(v) for k, v in value.items()}
        if isinstance(value, (tuple, list)):
            return type(value)(spec(v) for v in value)
        return None

    bound = inspect.signature(model.forward).bind(*args, **kwargs)
    return {name: spec(value) for name, value in bound.arguments.items()}


def default_tolerance(outputs: Any) -> Tolerance:
    """The check's tolerance for these model outputs: by the least precise floating dtype among them.

    float32 and float64: ``rtol=1e-4``, ``atol=1e-5``. float16 and bfloat16, whose every product is rounded
    to 11 or 8 significant bits: 10 machine epsilons for both (about 1e-2 and 8e-2).
    """
    tensors = [tensor for _, tensor in flatten_tensors(outputs) if tensor.is_floating_point()]
    eps = max((torch.finfo(tensor.dtype).eps for tensor in tensors), default=0.0)
    if eps <= torch.finfo(torch.float32).eps:
        return Tolerance()
    return Tolerance(rtol=10 * eps, atol=10 * eps)


def _refuse_unverifiable(model: nn.Module, example_input: ModelInputs) -> None:
    """Refuse, before exporting, a bfloat16 tensor: onnxruntime's CPU provider has no kernels for it."""
    named = [*model.named_parameters(), *model.named_buffers()]
    found = next(((name, t) for name, t in named if t.dtype == torch.bfloat16), None)
    if found is not None:
        path = found[0].rpartition(".")[0]
        owner = type(model.get_submodule(path)).__qualname__
        where = f"{found[0]!r} of module {path or '<root>'!r} ({owner})"
    elif any(t.dtype == torch.bfloat16 for t in input_tensors(example_input)):
        where = "an input tensor"
    else:
        return
    raise UnsupportedModelError(
        f"export_onnx: {where} is torch.bfloat16, which onnxruntime's CPU provider cannot run, so the export "
        "cannot be checked; export a float32 copy (model.float() and float32 inputs), or pass verify=False "
        "to write the file unchecked"
    )


def _check_onnxruntime(
    path: Path, target: Path, example_input: ModelInputs, expected: Any, tolerance: Tolerance
) -> None:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: graph-optimisation notices are not the user's concern
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [node.name for node in session.get_inputs()]
    tensors = input_tensors(example_input)
    if len(names) != len(tensors):
        raise OnnxMismatchError(
            f"the ONNX graph {target} takes {len(names)} inputs {names}, the example input holds "
            f"{len(tensors)} tensors"
        )
    by_name = isinstance(example_input, Mapping) and all(
        isinstance(example_input.get(name), torch.Tensor) for name in names
    )  # keyword inputs are graph inputs of the same name, in forward's order rather than the dict's
    pairs = [(name, example_input[name]) for name in names] if by_name else zip(names, tensors, strict=True)
    feed = {name: tensor.detach().cpu().numpy() for name, tensor in pairs}
    reference = flatten_tensors(expected)
    actual = session.run(None, feed)
    if len(actual) != len(reference):
        raise OnnxMismatchError(
            f"onnxruntime returns {len(actual)} outputs for {target}, PyTorch {len(reference)} "
            f"({[name for name, _ in reference]})"
        )
    # onnxruntime returns the flattened outputs in pytree order: rebuild PyTorch's structure around them.
    rebuilt = {name: torch.from_numpy(array) for (name, _), array in zip(reference, actual, strict=True)}
    try:
        compare_outputs(dict(reference), rebuilt, tolerance, error=OnnxMismatchError)
    except OnnxMismatchError as error:
        raise OnnxMismatchError(f"onnxruntime differs from PyTorch for {target}: {error}") from None

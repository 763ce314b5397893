"""ONNX export of exported models, checked against onnxruntime."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from slimtrain.compress._modules import copy_model, set_submodule
from slimtrain.compress.exported_format import PREPROCESSING_ATTR
from slimtrain.errors import OnnxMismatchError
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
    example_input: torch.Tensor,
    path: str | os.PathLike[str],
    *,
    dynamic_batch: bool = True,
    opset_version: int | None = None,
    verify: bool = True,
    rtol: float = 1e-4,
    atol: float = 1e-5,
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
        model: The exported model (unchanged; a copy is exported).
        example_input: One input batch, used for tracing and for the check.
        path: Output ``.onnx`` file.
        dynamic_batch: Let the batch dimension vary in the ONNX graph.
        opset_version: ONNX opset; the exporter's default when None.
        verify: Run the file with onnxruntime on ``example_input`` and compare with PyTorch.
        rtol: Relative tolerance of the check.
        atol: Absolute tolerance of the check, scaled by max(1, max|output|).
        preprocessing: How inputs must be prepared (see :func:`~slimtrain.compress.save_exported`), stored
            as JSON in the file's ``metadata_props`` under :data:`PREPROCESSING_METADATA_KEY`; default the
            model's ``slimtrain_preprocessing`` attribute (a model from ``load_exported``) when it has one.
        metadata: Further ``metadata_props`` entries (values that are not strings are stored as JSON).

    Returns:
        The path of the ONNX file.

    Raises:
        OnnxMismatchError: If ``verify`` and the outputs differ (the file is not written then).
    """
    path = Path(path)
    exported = copy_model(model).eval()
    for name, module in list(exported.named_modules()):
        if isinstance(module, SparseLinear):
            set_submodule(exported, name, module.to_dense())
    dynamic_shapes = ({0: torch.export.Dim("batch", min=1)},) if dynamic_batch else None
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
            program = torch.onnx.export(
                exported,
                (example_input,),
                dynamo=True,
                dynamic_shapes=dynamic_shapes,
                opset_version=opset_version,
                verbose=False,
            )
            expected = exported(example_input)
            program.model.metadata_props.update(properties)
            program.save(str(tmp), external_data=False)
            if verify:
                _check_onnxruntime(tmp, path, example_input, expected, rtol, atol)
        apply_umask(tmp)  # mkstemp made it owner-only
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _check_onnxruntime(
    path: Path, target: Path, example_input: torch.Tensor, expected: torch.Tensor, rtol: float, atol: float
) -> None:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: graph-optimisation notices are not the user's concern
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: example_input.detach().cpu().numpy()}
    actual = session.run(None, feed)[0]
    reference = expected.detach().cpu().numpy()
    scale = max(1.0, float(np.abs(reference).max()))
    if actual.shape != reference.shape or not np.allclose(actual, reference, rtol=rtol, atol=atol * scale):
        error = float(np.abs(actual - reference).max()) if actual.shape == reference.shape else float("nan")
        raise OnnxMismatchError(
            f"onnxruntime output differs from PyTorch for {target}: "
            f"shapes {actual.shape} vs {reference.shape}, "
            f"max abs error {error:.3g}"
        )

"""ONNX export of exported models, checked against onnxruntime."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from slimtrain.compress._modules import copy_model, set_submodule
from slimtrain.errors import OnnxMismatchError
from slimtrain.layers import SparseLinear


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
) -> Path:
    """Export ``model`` (in eval mode) to a single ONNX file and check it with onnxruntime.

    :class:`SparseLinear` layers are exported as dense linears (the ONNX standard has no CSR matrix product).
    The file is written under a temporary name and renamed into place.

    Args:
        model: The exported model (unchanged; a copy is exported).
        example_input: One input batch, used for tracing and for the check.
        path: Output ``.onnx`` file.
        dynamic_batch: Let the batch dimension vary in the ONNX graph.
        opset_version: ONNX opset; the exporter's default when None.
        verify: Run the file with onnxruntime on ``example_input`` and compare with PyTorch.
        rtol: Relative tolerance of the check.
        atol: Absolute tolerance of the check, scaled by max(1, max|output|).

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
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".onnx", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with torch.no_grad():
            program = torch.onnx.export(
                exported,
                (example_input,),
                dynamo=True,
                dynamic_shapes=dynamic_shapes,
                opset_version=opset_version,
                verbose=False,
            )
            expected = exported(example_input)
        program.save(str(tmp), external_data=False)
        if verify:
            _check_onnxruntime(tmp, path, example_input, expected, rtol, atol)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _check_onnxruntime(
    path: Path, target: Path, example_input: torch.Tensor, expected: torch.Tensor, rtol: float, atol: float
) -> None:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
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

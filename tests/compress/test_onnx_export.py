"""ONNX export of exported models, checked with onnxruntime."""

import warnings

import numpy as np
import onnxruntime
import pytest
import torch

from slimtrain.compress import (
    FactorizationCostWarning,
    OnnxMismatchError,
    SparseLinear,
    SVDConv2d,
    TuckerConv2d,
    export_onnx,
    filter_pruning_plan,
    global_magnitude_prune,
    remove_channels,
    svd_decompose,
    to_sparse_linear,
    tucker_decompose,
)

from .toy_models import build, example_input


def _every_structure() -> torch.nn.Module:
    """A ResNet thinned by filter pruning, then SVD in stage 1, Tucker in stage 2, a pruned CSR classifier."""
    model = build("resnet_b", torch.float32)
    x = example_input(torch.float32)
    thinned = remove_channels(model, filter_pruning_plan(model, 0.5, x), x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FactorizationCostWarning)
        svd = svd_decompose(thinned, 0.5, layers=["layer1.conv1", "layer1.conv2"])
        tucker = tucker_decompose(svd, 0.5, layers=["layer2.0.conv1", "layer2.1.conv2"])
    pruned = global_magnitude_prune(tucker, 0.5)
    return to_sparse_linear(pruned, ["classifier"])


def test_onnx_round_trip_every_structure(tmp_path):
    """ONNX Runtime's outputs match PyTorch's within 1e-4 relative for another batch size than the example."""
    model = _every_structure()
    kinds = {type(m) for m in model.modules()}
    assert {SVDConv2d, TuckerConv2d, SparseLinear} <= kinds
    path = export_onnx(model, torch.randn(2, 3, 8, 8), tmp_path / "model.onnx")
    assert path.is_file() and [p.name for p in tmp_path.iterdir()] == ["model.onnx"]
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    other = torch.randn(5, 3, 8, 8)
    (actual,) = session.run(None, {session.get_inputs()[0].name: other.numpy()})
    with torch.no_grad():
        expected = model.eval()(other).numpy()
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5)


def test_mismatch_is_refused_and_nothing_written(tmp_path, monkeypatch):
    """If onnxruntime disagrees with PyTorch, OnnxMismatchError is raised and no file is left behind."""
    original_run = onnxruntime.InferenceSession.run

    def shifted_run(self, *args, **kwargs):
        return [out + 1.0 for out in original_run(self, *args, **kwargs)]

    monkeypatch.setattr(onnxruntime.InferenceSession, "run", shifted_run)
    with pytest.raises(OnnxMismatchError, match=r"model\.onnx"):
        export_onnx(torch.nn.Linear(4, 2), torch.randn(3, 4), tmp_path / "model.onnx")
    assert list(tmp_path.iterdir()) == []

"""Models inside DistributedDataParallel or torch.compile: read as any module, unwrapped where a result is
tied to the base model's names, refused (naming ``.module``) where layers are copied or replaced.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.distributed as dist
from torch import nn

import slimtrain
from slimtrain import compress, metrics
from slimtrain.errors import UnsupportedModelError


def _base() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))


@pytest.fixture(scope="module")
def ddp(tmp_path_factory):
    """A one-process gloo group, so that DistributedDataParallel can be built."""
    store = dist.FileStore(str(tmp_path_factory.mktemp("store") / "file"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    yield lambda model: nn.parallel.DistributedDataParallel(model)
    dist.destroy_process_group()


def _compiled(model: nn.Module) -> nn.Module:
    return torch.compile(model)


@pytest.mark.parametrize("wrapper", ["ddp", "compile"])
def test_counts_read_a_wrapped_model_as_any_module(wrapper, ddp):
    wrapped = (ddp if wrapper == "ddp" else _compiled)(_base())
    assert metrics.count_parameters(wrapped, "all").dense == 4 * 8 + 8 + 8 * 2 + 2
    assert metrics.count_parameters(wrapped, "prunable").dense == 4 * 8 + 8 * 2


@pytest.mark.parametrize(
    "operation",
    [
        lambda m, x: compress.global_magnitude_prune(m, 0.5),
        lambda m, x: compress.svd_decompose(m, 0.5, include_linear=True),
        lambda m, x: compress.to_sparse_linear(m),
    ],
    ids=["magnitude", "svd", "csr"],
)
def test_operators_that_copy_layers_refuse_data_parallel_naming_module(operation, ddp):
    with pytest.raises(UnsupportedModelError, match=r"DistributedDataParallel.*model\.module"):
        operation(ddp(_base()), torch.randn(3, 4))


@pytest.mark.parametrize("wrapper", ["ddp", "compile"])
def test_onnx_exports_the_wrapped_model(wrapper, ddp, tmp_path):
    model = _base()
    wrapped = (ddp if wrapper == "ddp" else _compiled)(model)
    x = torch.randn(3, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = compress.export_onnx(wrapped, x, tmp_path / "m.onnx")
    assert path.exists()


@pytest.mark.parametrize("wrapper", ["ddp", "compile"])
def test_save_exported_stores_the_wrapped_model_under_its_own_names(wrapper, ddp, tmp_path):
    model = _base()
    wrapped = (ddp if wrapper == "ddp" else _compiled)(model)
    compress.save_exported(wrapped, tmp_path / "e", base=_base)
    loaded = slimtrain.load(tmp_path / "e", factory=_base)
    x = torch.randn(3, 4)
    torch.testing.assert_close(loaded(x), model.eval()(x), rtol=0, atol=0)


def test_conversion_to_factorized_layers_refuses_data_parallel(ddp):
    from slimtrain.lowrank import convert_to_lowrank

    wrapped = ddp(_base())
    with pytest.raises(UnsupportedModelError, match=r"convert_to_lowrank.*model\.module"):
        convert_to_lowrank(wrapped, keep_last_linear_dense=False)
    assert all(type(m) in (nn.Linear, nn.ReLU, nn.Sequential) for m in wrapped.module.modules())

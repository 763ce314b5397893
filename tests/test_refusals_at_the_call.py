"""Public functions taking a model work exactly or refuse at the call, naming the module and what to do.

Half precision, models without parameters, sparse embedding gradients, unmaterialized (meta, lazy) models
and unknown layer names in arguments.
"""

import math
import warnings

import pytest
import torch
from torch import nn

from slimtrain import compress, metrics
from slimtrain.errors import BadInputError, UnknownNameError, UnsupportedModelError
from slimtrain.fw import build_constraints
from slimtrain.lowrank import convert_to_lowrank
from slimtrain.swd import MagnitudeSelection, SelectiveWeightDecay


def _mlp(dtype: torch.dtype = torch.float32) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)).to(dtype)


# -- half precision ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_csr_storage_refuses_half_precision_on_cpu(dtype):
    """Torch's CPU CSR product has no half kernel: refused at the call, naming the layers and the dtype."""
    with pytest.raises(UnsupportedModelError, match=rf"'0' \(Linear\).*{dtype}.*model\.float\(\)"):
        compress.to_sparse_linear(_mlp(dtype))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_lowrank_conversion_of_half_precision_is_exact_up_to_its_rounding(dtype):
    """Factorized in float32, stored in the layer's dtype: at full rank, the function within that rounding."""
    model = _mlp(dtype)
    x = torch.randn(3, 8).to(dtype)
    with torch.no_grad():
        before = model(x).float()
    layers = convert_to_lowrank(
        model,
        linear="matrix",
        keep_last_linear_dense=False,
        init="from_weights",
        rank_fraction=1.0,
        max_rank_fraction=1.0,
    )
    assert set(layers) == {"0", "2"}
    assert {p.dtype for p in model.parameters()} == {dtype}
    with torch.no_grad():
        after = model(x).float()
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(after, before, rtol=8 * eps, atol=8 * eps)


def test_onnx_export_refuses_bfloat16_before_writing(tmp_path):
    """The CPU provider of onnxruntime cannot run bfloat16: refused at the call, nothing written."""
    model, x = _mlp(torch.bfloat16), torch.randn(2, 8).to(torch.bfloat16)
    expected = r"'0\.weight' of module '0' \(Linear\).*bfloat16.*verify=False"
    with pytest.raises(UnsupportedModelError, match=expected):
        compress.export_onnx(model, x, tmp_path / "m.onnx")
    assert not list(tmp_path.iterdir())


def test_onnx_check_tolerance_follows_the_output_dtype(tmp_path):
    """A float16 export passes its default check; the float32 defaults are unchanged and tighter."""
    pytest.importorskip("onnxruntime")
    model, x = _mlp(torch.float16), torch.randn(2, 8).half()
    assert compress.export_onnx(model, x, tmp_path / "m.onnx").exists()
    half, single = onnx_tolerance(torch.float16), onnx_tolerance(torch.float32)
    assert (single.rtol, single.atol) == (1e-4, 1e-5)
    assert half.rtol > single.rtol and half.atol > single.atol
    assert onnx_tolerance(torch.bfloat16).rtol > half.rtol


def onnx_tolerance(dtype: torch.dtype):
    from slimtrain.compress.onnx_export import default_tolerance

    return default_tolerance({"y": torch.zeros(2, dtype=dtype), "ids": torch.zeros(2, dtype=torch.long)})


# -- models without parameters -------------------------------------------------------------------------------
class _BufferOnly(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("w", torch.randn(8, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.w


@pytest.mark.parametrize("model", [nn.Identity(), _BufferOnly()], ids=["identity", "buffer-only"])
def test_summarize_without_parameters_gives_undefined_ratios_as_nan(model):
    """0/0 ratios are NaN (docs/metrics.md), the counts 0; nothing raises."""
    fields = metrics.summarize(model, torch.randn(2, 8))
    assert fields["params_dense_all"] == fields["params_stored_all"] == 0
    for key in ("compression_ratio_all", "compression_ratio_prunable", "storage_fraction_all"):
        assert math.isnan(fields[key]), key


def test_summarize_with_prunable_weights_only_missing_keeps_the_defined_ratios():
    """A model with parameters but no prunable weight: `all` ratios defined, `prunable` ones NaN."""
    model = nn.Sequential(nn.BatchNorm1d(8)).eval()
    fields = metrics.summarize(model, torch.randn(2, 8))
    assert fields["compression_ratio_all"] == pytest.approx(1.0 / fields["storage_fraction_all"])
    assert math.isnan(fields["compression_ratio_prunable"])


@pytest.mark.parametrize(
    "call",
    [
        lambda m: compress.to_sparse_linear(m),
        lambda m: build_constraints(m, "unstructured", k=0.3, tau=10.0),
        lambda m: compress.global_magnitude_prune(m, 0.5),
    ],
    ids=["to_sparse_linear", "build_constraints", "global_magnitude_prune"],
)
def test_no_parameters_refused_naming_the_model_type(call):
    with pytest.raises(BadInputError, match="_BufferOnly"):
        call(_BufferOnly())


# -- sparse embedding gradients ------------------------------------------------------------------------------
class _SparseEmbedding(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(30, 8, sparse=True)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.emb(x).mean(1))


def test_sfw_refuses_a_sparse_embedding_at_construction():
    with pytest.raises(UnsupportedModelError, match=r"'emb' \(Embedding\).*sparse=True"):
        build_constraints(_SparseEmbedding(), "unstructured", k=0.3, tau=10.0)
    frozen = _SparseEmbedding()
    frozen.emb.weight.requires_grad_(False)
    assert build_constraints(frozen, "unstructured", k=0.3, tau=10.0)  # left out: nothing to refuse


def test_swd_apply_refuses_a_selected_sparse_embedding_before_changing_gradients():
    """The reference population selects the embedding: refused, every gradient as backward left it."""
    model, x = _SparseEmbedding(), torch.randint(0, 30, (2, 5))
    model(x).pow(2).mean().backward()
    before = {name: p.grad.to_dense().clone() for name, p in model.named_parameters()}
    selection = MagnitudeSelection(500, population="reference")
    swd = SelectiveWeightDecay(selection, weight_decay=5e-4, total_steps=1)
    with pytest.raises(UnsupportedModelError, match=r"'emb' \(Embedding\).*penalty"):
        swd.apply_(model)
    for name, p in model.named_parameters():
        assert torch.equal(p.grad.to_dense(), before[name]), name
    # The default population has no embedding: the gradient hook works.
    SelectiveWeightDecay(MagnitudeSelection(500), weight_decay=5e-4, total_steps=1).apply_(model)


# -- unmaterialized models -----------------------------------------------------------------------------------
def _meta() -> nn.Module:
    with torch.device("meta"):
        return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))


def _lazy() -> nn.Module:
    return nn.Sequential(nn.LazyLinear(16), nn.ReLU(), nn.Linear(16, 4))


_TAKING_A_MODEL = {
    "count_parameters": lambda m: metrics.count_parameters(m),
    "summarize": lambda m: metrics.summarize(m, torch.randn(2, 8)),
    "count_macs": lambda m: metrics.count_macs(m, torch.randn(2, 8)),
    "build_constraints": lambda m: build_constraints(m, "unstructured", k=0.3, tau=10.0),
    "svd_decompose": lambda m: compress.svd_decompose(m, 0.5, include_linear=True),
    "to_sparse_linear": lambda m: compress.to_sparse_linear(m),
    "convert_to_lowrank": lambda m: convert_to_lowrank(m, linear="matrix", keep_last_linear_dense=False),
    "export_onnx": lambda m: compress.export_onnx(m, torch.randn(2, 8), "unused.onnx"),
    "global_magnitude_prune": lambda m: compress.global_magnitude_prune(m, 0.5),
    "save_exported": lambda m: compress.save_exported(m, "unused-export", base="mlp"),
}


@pytest.mark.parametrize("name", sorted(_TAKING_A_MODEL))
@pytest.mark.parametrize(
    ("build", "advice"), [(_meta, r"'meta' device.*to_empty"), (_lazy, r"lazy module.*forward pass")]
)
def test_unmaterialized_models_are_refused_at_the_call(name, build, advice):
    """The first tensor without values is named with its module path and type, and what to do."""
    model = build()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # refused before any work (no layer-left-dense warning first)
        expected = rf"'0\.weight' of module '0' \(\w*Linear\).*{advice}"
        with pytest.raises(UnsupportedModelError, match=expected):
            _TAKING_A_MODEL[name](model)
    assert next(model.parameters()).is_meta or isinstance(model[0], nn.LazyLinear)  # left as it was


# -- unknown layer names -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "call",
    [
        lambda m: compress.svd_decompose(m, 0.5, layers=["nope", "0"]),
        lambda m: compress.to_sparse_linear(m, layers=["nope", "0"]),
        lambda m: metrics.count_parameters(m, metrics.compressed(["nope", "0"])),
    ],
    ids=["svd_decompose", "to_sparse_linear", "count_parameters"],
)
def test_unknown_layer_names_name_them_and_valid_ones(call):
    with pytest.raises(UnknownNameError, match=r"'nope'.*valid names: '0'") as info:
        call(_mlp())
    assert isinstance(info.value, BadInputError) and isinstance(info.value, KeyError)
    assert "'0'," not in str(info.value).split("valid")[0]  # only the unknown name is reported unknown

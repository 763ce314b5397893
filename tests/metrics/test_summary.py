import copy

import pytest
import torch
import torch.nn.utils.prune as prune
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from slimtrain.compress import to_sparse_linear
from slimtrain.metrics import compressed, summarize

from .test_dlrt_conventions import LowRankLinear


def test_masked_lenet_summary_is_consistent(lenet5):
    """Masked: N_stored = NNZ, ratio = 1/storage_fraction = 1/(1 − sparsity_all), speedup = dense/eff."""
    prune.l1_unstructured(lenet5.fc1, "weight", amount=0.9)
    x = torch.randn(2, 1, 32, 32)
    s = summarize(lenet5, x)
    assert s["model_state"] == "masked"
    assert s["params_dense_all"] == s["params_stored_all"] == 61_706
    assert s["params_nonzero_all"] == 61_706 - 43_200
    assert s["compression_ratio_all"] == pytest.approx(1 / s["storage_fraction_all"])
    assert s["compression_ratio_all"] == pytest.approx(1 / (1 - s["sparsity_all"]))
    assert s["compression_ratio_prunable"] == pytest.approx(61_470 / (61_470 - 43_200))
    assert s["sparsity_per_layer"]["fc1.weight"] == pytest.approx(0.9)
    assert s["macs_dense"] == 416_520
    assert s["macs_effective"] == pytest.approx(416_520 - 43_200)
    assert s["theoretical_speedup"] == pytest.approx(416_520 / (416_520 - 43_200))
    assert "sparsity_effective_prunable" not in s  # not a plain ReLU MLP


def test_mlp_summary_reports_effective_sparsity(mlp):
    """A plain ReLU MLP gets sparsity_effective_prunable ≥ sparsity_prunable."""
    with torch.no_grad():
        mlp[0].weight[0] = 0
    s = summarize(mlp, torch.randn(3, 4))
    assert s["sparsity_prunable"] == pytest.approx(4 / 18)
    assert s["sparsity_effective_prunable"] == pytest.approx((4 + 2) / 18)


@settings(max_examples=10, deadline=None)
@given(st.floats(0.0, 0.95), st.integers(0, 2**16), st.booleans())
def test_csr_storage_is_counted_like_the_masked_model(amount, seed, mlp):
    """Linears stored as CSR: every metric equals the masked model's (for a ReLU MLP its effective sparsity
    too), except that the stored count drops by exactly the zeros the CSR layers no longer hold.
    """
    torch.manual_seed(seed)
    features = [nn.Flatten()] if mlp else [nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten()]
    masked = nn.Sequential(
        *features, nn.Linear(64 if mlp else 3 * 6 * 6, 12), nn.ReLU(), nn.Linear(12, 5, bias=not mlp)
    )
    linears = [m for m in masked if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for layer in linears:
            layer.weight[torch.rand_like(layer.weight) < amount] = 0
    zeros = sum(int((layer.weight == 0).sum()) for layer in linears)
    x = torch.randn(2, 1, 8, 8)
    expected = summarize(masked, x)
    assert ("sparsity_effective_prunable" in expected) == mlp
    got = summarize(to_sparse_linear(copy.deepcopy(masked)), x)
    assert got.pop("params_stored_all") == expected.pop("params_stored_all") - zeros
    assert got == expected


def test_factorized_summary_with_and_without_reference():
    """Factorized model: exported state, DLRT fields; dense MACs and speedup only with a reference."""
    model = nn.Sequential(LowRankLinear(32, 16, 4), nn.ReLU(), nn.Linear(16, 10))
    reference = nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 10))
    x = torch.randn(2, 32)
    alone = summarize(model, x, population=compressed(["0"]))
    assert alone["model_state"] == "exported"
    assert "macs_dense" not in alone and "theoretical_speedup" not in alone
    assert alone["macs_effective"] == 4 * (32 + 16) + 160
    assert alone["storage_fraction_compressed"] == pytest.approx(192 / 512)
    assert alone["population"] == "compressed: 0"
    assert alone["cr_percent_eval_factorized_only"] == pytest.approx(62.5)
    assert "cr_percent_eval_dlrt_convention" in alone
    assert "ranks_per_layer" not in alone  # the layer exposes no `ranks`
    model[0].ranks = (4, 4)
    assert summarize(model, x)["ranks_per_layer"] == {"0": [4, 4]}
    ref = summarize(model, x, reference=reference)
    assert ref["macs_dense"] == 512 + 160
    assert ref["theoretical_speedup"] == pytest.approx(672 / 352)
    assert ref["compression_ratio_all"] == pytest.approx((528 + 170) / (192 + 16 + 170))


def test_exported_thin_model_uses_reference_size():
    """A channel-pruned export is compared with its reference: ratio = N_ref/N_stored, state exported."""
    reference = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 2))
    thin = nn.Sequential(nn.Linear(8, 3), nn.ReLU(), nn.Linear(3, 2))
    s = summarize(thin, torch.randn(1, 8), reference=reference)
    assert s["model_state"] == "exported"
    assert s["compression_ratio_all"] == pytest.approx((54 + 14) / (27 + 8))
    assert s["theoretical_speedup"] == pytest.approx(60 / 30)


def test_bad_model_state_is_rejected(mlp):
    """An unknown model_state raises an error naming it."""
    with pytest.raises(ValueError, match="pruned"):
        summarize(mlp, torch.randn(1, 4), model_state="pruned")


def test_factorized_sparsity_counts_zeros_not_storage():
    """A factorized layer storing 192 of 512 weights is not 62.5% sparse: its sparsity counts the zeros of
    its factors (none, then 3 of them), its storage fraction is stored/dense = 1/compression ratio.
    """
    model = nn.Sequential(LowRankLinear(32, 16, 4), nn.ReLU(), nn.Linear(16, 10))
    x = torch.randn(2, 32)
    s = summarize(model, x)
    assert s["sparsity_prunable"] == 0.0 and s["sparsity_all"] == 0.0
    assert s["sparsity_per_layer"]["0.factors"] == 0.0
    assert s["storage_fraction_prunable"] == pytest.approx((192 + 160) / (512 + 160))
    assert s["storage_fraction_prunable"] == pytest.approx(1 / s["compression_ratio_prunable"])
    with torch.no_grad():
        model[0].k[0, :3] = 0
    s = summarize(model, x)
    assert s["sparsity_per_layer"]["0.factors"] == pytest.approx(3 / 192)
    assert s["sparsity_prunable"] == pytest.approx(3 / (192 + 160))


def test_tensor_train_layer_has_storage_fraction_not_sparsity():
    """A TTLinear stores its cores: sparsity 0 (no zeros), storage fraction Σ cores / (in·out); its MACs are
    the dense product it runs, so its speed-up over the dense layer is exactly 1.
    """
    from slimtrain.layers import TTLinear

    torch.manual_seed(0)
    dense = nn.Linear(16, 16, bias=False)
    tt = TTLinear.from_weight(dense.weight.detach(), modes=(4, 4, 4, 4), rank=2)
    s = summarize(nn.Sequential(tt), torch.randn(3, 16), reference=nn.Sequential(dense))
    stored = sum(core.numel() for core in tt.cores)
    assert s["sparsity_prunable"] == 0.0
    assert s["storage_fraction_prunable"] == pytest.approx(stored / 256)
    assert s["macs_effective"] == s["macs_dense"] == 256 and s["theoretical_speedup"] == 1.0


def test_masked_storage_fraction_is_the_density():
    """On a masked model the stored fraction counts non-zeros: storage_fraction = 1 − sparsity."""
    model = nn.Sequential(nn.Linear(10, 10, bias=False))
    with torch.no_grad():
        model[0].weight[:3] = 0
    s = summarize(model, torch.randn(1, 10))
    assert s["model_state"] == "masked" and s["sparsity_prunable"] == pytest.approx(0.3)
    assert s["storage_fraction_prunable"] == pytest.approx(0.7)


def test_params_dense_all_is_the_reference_size():
    """params_dense_all is N_ref, the numerator of compression_ratio_all: the reference's size for a thinned
    export (whose own size is its stored count).
    """
    reference = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 2))
    thin = nn.Sequential(nn.Linear(8, 3), nn.ReLU(), nn.Linear(3, 2))
    s = summarize(thin, torch.randn(1, 8), reference=reference)
    assert (s["params_dense_all"], s["params_stored_all"]) == (54 + 14, 27 + 8)
    assert s["compression_ratio_all"] == pytest.approx(s["params_dense_all"] / s["params_stored_all"])


def test_thinned_model_that_keeps_zeros_is_counted_masked():
    """Removing dead channels does not make a sparse model's zeros stored information: a thinned model
    with zeros in a dense weight is `masked` (N_stored = NNZ), one without is `exported` (N_stored = stored).
    """
    reference = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 2))
    thin = nn.Sequential(nn.Linear(8, 3), nn.ReLU(), nn.Linear(3, 2))
    assert summarize(thin, torch.randn(1, 8), reference=reference)["model_state"] == "exported"
    with torch.no_grad():
        thin[0].weight[0, :4] = 0
    s = summarize(thin, torch.randn(1, 8), reference=reference)
    assert s["model_state"] == "masked"
    assert s["compression_ratio_all"] == pytest.approx((54 + 14) / (27 + 8 - 4))

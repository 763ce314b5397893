import pytest
import torch
import torch.nn.utils.parametrize as parametrize
import torch.nn.utils.prune as prune
from torch import nn

from slimtrain.metrics import compressed, count_parameters, count_tensors, sparsity, sparsity_per_layer

# Hand counts: (all, prunable) parameters.
MLP_COUNTS = (4 * 3 + 3 + 3 * 2 + 2, 4 * 3 + 3 * 2)
LENET5_COUNTS = (156 + 2416 + 48120 + 10164 + 850, 150 + 2400 + 48000 + 10080 + 840)
# stem 216 + BN 16; block1 2·(576 + 16); block2 1152 + 32 + 2304 + 32 + shortcut 128 + 32; fc 160 + 10
RESNET2_COUNTS = (
    216 + 16 + 2 * 592 + 1152 + 32 + 2304 + 32 + 128 + 32 + 170,
    216 + 2 * 576 + 1152 + 2304 + 128 + 160,
)


@pytest.mark.parametrize(
    ("fixture", "counts"), [("mlp", MLP_COUNTS), ("lenet5", LENET5_COUNTS), ("resnet2", RESNET2_COUNTS)]
)
def test_hand_counted_parameters(request, fixture, counts):
    """Dense totals over `all` and `prunable` equal hand counts; a dense model stores N, all non-zero.

    BatchNorm β starts at zero: those entries are stored but are not non-zeros (ShrinkBench convention).
    """
    model = request.getfixturevalue(fixture)
    zero_init = sum(m.bias.numel() for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    for population, expected in zip(("all", "prunable"), counts, strict=True):
        t = count_parameters(model, population)
        zeros = zero_init if population == "all" else 0
        assert (t.dense, t.stored, t.nonzero) == (expected, expected, expected - zeros)
        assert t.sparsity == pytest.approx(zeros / expected)


def test_resnet_buffers_are_not_parameters(resnet2):
    """BN running statistics (buffers) never enter the `all` count."""
    names = {e.name for e in count_tensors(resnet2, "all")}
    assert "bn.weight" in names and "bn.bias" in names
    assert not any("running" in n or "num_batches" in n for n in names)


def test_prunable_is_conv_and_linear_weights_only(resnet2):
    """`prunable` holds exactly the Conv/Linear weights: no bias, no BN parameter."""
    names = [e.name for e in count_tensors(resnet2, "prunable")]
    expected = [f"{n}.weight" for n, m in resnet2.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert names == expected


def test_prune_masks_are_applied(lenet5):
    """With torch.nn.utils.prune masks, NNZ drops by exactly the pruned count; N is unchanged."""
    prune.l1_unstructured(lenet5.fc1, "weight", amount=12000)
    prune.random_unstructured(lenet5.conv2, "weight", amount=400)
    t = count_parameters(lenet5, "prunable")
    assert t.dense == LENET5_COUNTS[1]
    assert t.nonzero == LENET5_COUNTS[1] - 12400
    assert sparsity(lenet5, "prunable") == pytest.approx(12400 / LENET5_COUNTS[1])
    per_layer = sparsity_per_layer(lenet5)
    assert per_layer["fc1.weight"] == pytest.approx(0.25) and per_layer["conv2.weight"] == pytest.approx(
        1 / 6
    )


class _HalfMask(nn.Module):
    def forward(self, w):
        mask = torch.ones_like(w)
        mask[: w.shape[0] // 2] = 0
        return w * mask


def test_parametrize_masks_are_applied(mlp):
    """A parametrization that zeroes rows is honoured, and its `original` tensor is not counted twice."""
    parametrize.register_parametrization(mlp[0], "weight", _HalfMask())
    t = count_parameters(mlp, "all")
    assert t.dense == MLP_COUNTS[0]
    assert t.nonzero == MLP_COUNTS[0] - 4  # one of three rows of 4 zeroed


def test_tied_parameters_counted_once():
    """A weight shared by two modules is counted once."""
    a = nn.Linear(5, 5, bias=False)
    b = nn.Linear(5, 5, bias=False)
    b.weight = a.weight
    assert count_parameters(nn.Sequential(a, b)).dense == 25


def test_compressed_population_by_name_and_predicate(lenet5):
    """`compressed` selects only the weights of the named layers; names and predicates agree."""
    by_name = count_parameters(lenet5, compressed(["fc1", "fc2"]))
    by_pred = count_parameters(lenet5, compressed(lambda name, m: name in ("fc1", "fc2")))
    assert by_name.dense == by_pred.dense == 48000 + 10080


def test_compressed_population_unknown_module_is_named(lenet5):
    """Naming a module the model lacks raises an error naming it."""
    with pytest.raises(ValueError, match="fc9"):
        count_parameters(lenet5, compressed(["fc1", "fc9"]))


def test_unknown_population_is_rejected(mlp):
    """An unknown population name raises an error naming it."""
    with pytest.raises(ValueError, match="weights"):
        count_parameters(mlp, "weights")


class SVDLinear(nn.Module):
    """Rank-r replacement of Linear(m, n): x → B(Ax) + bias, implementing FactorizedLayer."""

    def __init__(self, m, n, r):
        super().__init__()
        self.a = nn.Linear(m, r, bias=False)
        self.b = nn.Linear(r, n, bias=False)
        self.bias = nn.Parameter(torch.zeros(n))
        self.shape = (n, m)

    def dense_parameter_count(self):
        return self.shape[0] * self.shape[1] + self.shape[0]

    def forward(self, x):
        return self.b(self.a(x)) + self.bias


def test_factorized_layer_counts_dense_equivalent_and_factors():
    """A FactorizedLayer stores (n+m)r factors + bias, stands for n·m + n dense, and hides its sublayers."""
    model = nn.Sequential(SVDLinear(20, 10, 3), nn.ReLU(), nn.Linear(10, 2))
    entries = {e.name: e for e in count_tensors(model, "all")}
    assert set(entries) == {"0.factors", "0.bias", "2.weight", "2.bias"}
    assert (entries["0.factors"].dense, entries["0.factors"].stored) == (200, 90)
    assert entries["0.factors"].shapes == ((3, 20), (10, 3))
    t = count_parameters(model, "prunable")
    assert (t.dense, t.stored) == (200 + 20, 90 + 20)
    assert count_parameters(model, "all").nonzero == 90 + 20 + 2  # the zero bias is stored, not non-zero


def test_factorized_layer_with_impossible_dense_count_is_named():
    """A dense count below the bias size raises an error naming the layer."""

    class Broken(SVDLinear):
        def dense_parameter_count(self):
            return 1

    with pytest.raises(ValueError, match="'lr'"):
        count_tensors(nn.ModuleDict({"lr": Broken(4, 4, 1)}))


def test_totals_count_zeros_of_factors_not_missing_entries():
    """ParameterTotals.entries holds plain tensors at their dense size and factors at their stored size, so
    sparsity counts zeros only; a factorized layer's density is not its storage fraction.
    """
    from .test_dlrt_conventions import LowRankLinear

    model = nn.Sequential(LowRankLinear(32, 16, 4), nn.Linear(16, 10, bias=False))
    with torch.no_grad():
        model[1].weight[0] = 0
    t = count_parameters(model, "prunable")
    assert (t.dense, t.stored, t.entries) == (512 + 160, 192 + 160, 192 + 160)
    assert t.sparsity == pytest.approx(16 / 352) and t.density == pytest.approx(1 - 16 / 352)
    (factors,) = [e for e in count_tensors(model, "prunable") if e.role == "factors"]
    assert (factors.entries, factors.sparsity) == (192, 0.0)

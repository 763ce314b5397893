"""Each layer's parameter counts are the metrics functions' and equal literal hand counts."""

import pytest
import torch
from torch import nn

from slimtrain.algebra.tt import tt_storage
from slimtrain.layers import (
    LowRankLinear,
    MatrixFactorizedConv2d,
    MatrixFactorizedLinear,
    SVDConv2d,
    TTLinear,
    TuckerConv2d,
    TuckerFactorizedConv2d,
)
from slimtrain.lowrank import lowrank_report
from slimtrain.metrics import (
    count_parameters,
    cr_percent_train_tucker,
    dlrt_train_parameter_count,
    svd_parameter_count,
    tucker_augmented_ranks,
    tucker_parameter_count,
    tucker_train_parameter_count,
)


def test_tucker_training_count_is_one_number_for_one_cap():
    """A 64→64 3×3 Tucker conv at ranks (20, 20, 3, 3), r_max 32: the layer and the public metric agree.

    Σ n r = 2·64·20 + 2·3·3 = 2,578; ∏ r = 20·20·9 = 3,600. With the r_max cap, r̂ = (32, 32, 3, 3):
    Σ n r̂ = 4,114, ∏ r̂ = 9,216, Σ r̂ r = 1,298 → 20,806. With the cap n, r̂ = (40, 40, 3, 3): Σ n r̂ = 5,138,
    ∏ r̂ = 14,400, Σ r̂ r = 1,618 → 27,334. (Before, the public function silently used the second cap.)
    """
    layer = TuckerFactorizedConv2d(64, 64, 3, ranks=(20, 20, 3, 3))
    assert layer.max_ranks[:2] == (32, 32)
    dims, ranks = (64, 64, 3, 3), (20, 20, 3, 3)
    assert layer.train_parameter_count_tucker("rmax") == 20_806
    assert tucker_train_parameter_count(dims, ranks, layer.augmented_ranks("rmax")) == 20_806
    assert tucker_train_parameter_count(dims, ranks, tucker_augmented_ranks(ranks, (32, 32, 3, 3))) == 20_806
    assert layer.train_parameter_count_tucker("n") == 27_334
    assert tucker_train_parameter_count(dims, ranks, tucker_augmented_ranks(ranks, dims)) == 27_334
    # The public count has no default cap (it used to assume n and return 27,334 here).
    with pytest.raises(TypeError):
        tucker_train_parameter_count(dims, ranks)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("aug_cap", "count"),
    [("rmax", 20_806), ("n", 27_334)],  # hand counts of the test above
)
def test_reported_train_rate_is_the_public_metric_at_the_training_cap(aug_cap, count):
    """The run's report and the public metric give one train c.r. for one cap: 100·(1 − count/36,864)."""
    layer = TuckerFactorizedConv2d(64, 64, 3, ranks=(20, 20, 3, 3))
    model = nn.Sequential(layer)
    literal = 100 * (1 - count / 36_864)  # dense 64·64·3·3 = 36,864; rmax ≈ 43.56 %, n ≈ 25.85 %
    reported = lowrank_report(model, aug_cap=aug_cap)
    assert reported["layers"][0]["train_count_tucker"] == count
    assert reported["cr_percent_train_tucker"] == pytest.approx(literal)
    layers = [(layer.mode_sizes, layer.ranks, layer.augmented_ranks(aug_cap))]
    assert cr_percent_train_tucker(layers, 0, 36_864) == pytest.approx(literal)


CASES = {
    # name: (layer, {count method: (literal, metrics function value or None)})
    "tucker-training": lambda: (
        TuckerFactorizedConv2d(8, 6, 3, ranks=(2, 3, 3, 3)),
        {
            # modes (C_out 6, C_in 8, 3, 3) at (2, 3, 3, 3): 12 + 24 + 9 + 9 + 54 = 108
            "stored_parameter_count": (108, tucker_parameter_count((6, 8, 3, 3), (2, 3, 3, 3))),
            "dense_parameter_count": (6 * 8 * 9 + 6, None),
        },
    ),
    "matrix-linear-training": lambda: (
        MatrixFactorizedLinear(10, 7, ranks=3),
        {
            # U (7×3) + V (10×3) + S (3×3) = 21 + 30 + 9 = 60; eval K = US, V: (7 + 10)·3 = 51
            "stored_parameter_count": (60, tucker_parameter_count((7, 10), (3, 3))),
            "eval_parameter_count": (51, svd_parameter_count(7, 10, 3)),
            # 4·17·3 + 8·9 = 276
            "train_parameter_count_dlrt": (276, dlrt_train_parameter_count(7, 10, 3)),
        },
    ),
    "matrix-conv-training": lambda: (
        MatrixFactorizedConv2d(4, 6, 3, ranks=2),
        {
            # mat(W) 6 × 36: U 12 + V 72 + S 4 = 88; eval 2·(6 + 36) = 84
            "stored_parameter_count": (88, tucker_parameter_count((6, 36), (2, 2))),
            "eval_parameter_count": (84, svd_parameter_count(6, 36, 2)),
        },
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_training_layer_counts_equal_hand_counts_and_the_metrics(name):
    """Every count method of a training layer equals its literal hand count and the metrics function."""
    layer, expected = CASES[name]()
    for method, (literal, metric) in expected.items():
        assert getattr(layer, method)() == literal, method
        if metric is not None:
            assert metric == literal, method


DEPLOYMENT = {
    # name: (layer, literal parameter count with biases, the metrics formula for its weights, its bias)
    # k×k conv 4→2 (no bias, 4·2·9 = 72) + 1×1 2→6 with bias (12 + 6) = 90; mat(W) is 6 × 36 at rank 2
    "svd-conv": (lambda: SVDConv2d(4, 6, 3, 2), 90, lambda: svd_parameter_count(6, 36, 2), 6),
    # 10→3 (30) + 3→7 with bias (21 + 7) = 58
    "low-rank-linear": (lambda: LowRankLinear(10, 7, 3), 58, lambda: svd_parameter_count(7, 10, 3), 7),
    # 1×1 8→3 (24) + 3×3 3→2 (54) + 1×1 2→6 with bias (12 + 6) = 96: the Tucker count of (6, 8, 3, 3) at
    # (2, 3, 3, 3) less the two 3×3 spatial factors, which the deployed k×k core has multiplied in
    "tucker-conv": (
        lambda: TuckerConv2d(8, 6, 3, 2, 3),
        96,
        lambda: tucker_parameter_count((6, 8, 3, 3), (2, 3, 3, 3)) - 2 * 3 * 3,
        6,
    ),
}


@pytest.mark.parametrize("name", sorted(DEPLOYMENT))
def test_deployment_layer_parameters_equal_hand_counts_and_the_formulas(name):
    """A deployment layer holds exactly the factor entries the formulas count, plus its bias."""
    build, literal, formula, bias = DEPLOYMENT[name]
    layer = build()
    assert sum(p.numel() for p in layer.parameters()) == literal
    assert count_parameters(nn.Sequential(layer), "all").dense == literal
    assert formula() + bias == literal


@pytest.mark.parametrize(
    ("build", "literal"),
    [
        # U 7×3, S 3×2, V 10×2: K = US (7×2) and V (10×2) are stored, (7 + 10)·2 = 34
        (lambda: MatrixFactorizedLinear(10, 7, ranks=(3, 2)), 34),
        # mat(W) 6 × 36 at ranks (2, 1): (6 + 36)·1 = 42
        (lambda: MatrixFactorizedConv2d(4, 6, 3, ranks=(2, 1)), 42),
    ],
    ids=["matrix-linear", "matrix-conv"],
)
def test_matrix_eval_count_is_what_the_deployed_layer_stores(build, literal):
    """Eval count = weights of ``to_deployment()`` = (n + m)·min(r_U, r_V), also for unequal ranks."""
    layer = build()
    (n, m), r = layer.mode_sizes, min(layer.ranks)
    deployed = layer.to_deployment()
    bias = 0 if layer.bias is None else layer.bias.numel()
    weights = sum(p.numel() for p in deployed.parameters()) - bias
    assert layer.eval_parameter_count() == weights == literal == svd_parameter_count(n, m, r)


def test_tt_layer_counts_equal_hand_counts_and_the_metric():
    """TT cores of a 4×16 weight, modes (4, 4, 4), rank 2: 1·4·2 + 2·4·2 + 2·4·1 = 32 = tt_storage."""
    layer = TTLinear.from_weight(torch.randn(4, 16), (4, 4, 4), 2)
    assert layer.stored_parameter_count() == 32 == tt_storage((4, 4, 4), 2)
    assert layer.dense_parameter_count() == 64

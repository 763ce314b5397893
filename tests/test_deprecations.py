"""Public names that moved stay importable from their old path for one release, with a DeprecationWarning."""

import importlib

import pytest

MOVED = [
    ("slimtrain.metrics", "tt_parameter_count", "slimtrain.algebra.tt", "tt_storage"),
    ("slimtrain.lowrank", "TuckerConv2d", "slimtrain.layers", "TuckerFactorizedConv2d"),
    ("slimtrain.lowrank", "LowRankLinear", "slimtrain.layers", "MatrixFactorizedLinear"),
    ("slimtrain.lowrank", "MatrixLowRankConv2d", "slimtrain.layers", "MatrixFactorizedConv2d"),
    ("slimtrain.lowrank", "TuckerFactorizedLayer", "slimtrain.layers", "TuckerFactorizedLayer"),
    ("slimtrain.lowrank", "MatrixFactorizedLayer", "slimtrain.layers", "MatrixFactorizedLayer"),
    ("slimtrain.compress", "LowRankLinear", "slimtrain.layers", "LowRankLinear"),
    ("slimtrain.compress", "SVDConv2d", "slimtrain.layers", "SVDConv2d"),
    ("slimtrain.compress", "TuckerConv2d", "slimtrain.layers", "TuckerConv2d"),
    ("slimtrain.compress", "PointwiseConv2d", "slimtrain.layers", "PointwiseConv2d"),
    ("slimtrain.compress", "SparseLinear", "slimtrain.layers", "SparseLinear"),
    ("slimtrain.compress", "LAYER_TYPES", "slimtrain.layers", "LAYER_TYPES"),
    ("slimtrain.compress", "build_module", "slimtrain.layers", "build_layer"),
    ("slimtrain.compress", "module_config", "slimtrain.layers", "layer_config"),
    ("slimtrain.pointwise", "pointwise_conv2d", "slimtrain.layers", "pointwise_conv2d"),
    ("slimtrain.bcd", "TTLinear", "slimtrain.layers", "TTLinear"),
    ("slimtrain.bcd", "tt_svd", "slimtrain.algebra.tt", "tt_svd"),
    ("slimtrain.bcd", "tt_svd_matrix", "slimtrain.algebra.tt", "tt_svd_matrix"),
    ("slimtrain.bcd", "tt_reconstruct", "slimtrain.algebra.tt", "tt_reconstruct"),
    ("slimtrain.bcd", "tt_storage", "slimtrain.algebra.tt", "tt_storage"),
    ("slimtrain.bcd", "TTSVDResult", "slimtrain.algebra.tt", "TTSVDResult"),
    (
        "slimtrain.pruning",
        "global_magnitude_masks",
        "slimtrain.pruning.magnitude",
        "smallest_magnitude_masks",
    ),
    (
        "slimtrain.pruning",
        "layerwise_magnitude_masks",
        "slimtrain.pruning.magnitude",
        "per_tensor_magnitude_masks",
    ),
    ("slimtrain.pruning.masking", "MaskSet", "slimtrain.pruning.masks", "MaskSet"),
    ("slimtrain.pruning.slimming", "slimming_penalty", "slimtrain.pruning.baselines", "slimming_penalty"),
    ("slimtrain.pruning.slimming", "smooth_l1_gamma", "slimtrain.pruning.baselines", "smooth_l1_gamma"),
    ("slimtrain.fw", "conv_weights", "slimtrain.pruning.baselines", "conv_weights"),
    ("slimtrain.fw", "group_lasso_penalty", "slimtrain.pruning.baselines", "group_lasso_penalty"),
    ("slimtrain.fw", "nuclear_norm_penalty", "slimtrain.pruning.baselines", "nuclear_norm_penalty"),
    (
        "slimtrain.fw",
        "singular_value_soft_threshold_",
        "slimtrain.pruning.baselines",
        "singular_value_soft_threshold_",
    ),
    ("slimtrain.fw.penalties", "group_lasso_penalty", "slimtrain.pruning.baselines", "group_lasso_penalty"),
]


@pytest.mark.parametrize(("old", "name", "new", "new_name"), MOVED, ids=lambda v: str(v))
def test_old_path_warns_and_gives_the_new_object(old, name, new, new_name):
    """``old.name`` is the object now at ``new.new_name``, with a DeprecationWarning naming the new path."""
    with pytest.warns(DeprecationWarning, match=f"{new}.{new_name}"):
        value = getattr(importlib.import_module(old), name)
    assert value is getattr(importlib.import_module(new), new_name)


def test_unknown_names_still_raise_attribute_error():
    """The deprecation hook serves only moved names."""
    with pytest.raises(AttributeError, match="no_such_name"):
        importlib.import_module("slimtrain.compress").no_such_name  # noqa: B018

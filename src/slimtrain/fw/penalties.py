"""Old home of the penalties of SFW's baselines, now :mod:`slimtrain.pruning.baselines`."""

from slimtrain._deprecation import moved_names

MOVED_TO_BASELINES = {
    name: f"slimtrain.pruning.baselines:{name}"
    for name in (
        "conv_weights",
        "group_lasso_penalty",
        "nuclear_norm_penalty",
        "singular_value_soft_threshold_",
    )
}
"""The names this module and :mod:`slimtrain.fw` exported, and where they live now."""

__getattr__ = moved_names("slimtrain.fw.penalties", MOVED_TO_BASELINES)

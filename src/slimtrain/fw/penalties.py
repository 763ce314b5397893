"""Old home of the penalties of SFW's baselines, now :mod:`slimtrain.pruning.baselines`."""

from slimtrain._deprecation import moved_names

__getattr__ = moved_names(
    "slimtrain.fw.penalties",
    {
        name: f"slimtrain.pruning.baselines:{name}"
        for name in (
            "conv_weights",
            "group_lasso_penalty",
            "nuclear_norm_penalty",
            "singular_value_soft_threshold_",
        )
    },
)

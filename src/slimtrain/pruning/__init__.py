"""The sparsity core shared by SWD, NN-BCD, the pruning baselines and post-training pruning.

Scores → selection → masks → schedules; methods differ in their scores only:

- :mod:`~slimtrain.pruning.scores`: magnitude, group (filter) norm, BatchNorm |γ|;
- :mod:`~slimtrain.pruning.selection`: exact global / per-layer / budget selections with a documented tie
  rule, and the reference rules of SWD and NN-BCD as named options;
- :mod:`~slimtrain.pruning.magnitude`: the magnitude masks built from them;
- :mod:`~slimtrain.pruning.masks`: :class:`MaskSet`, applied to a copy, in place, or after every step;
- :mod:`~slimtrain.pruning.schedules`: cubic (Zhu & Gupta), iterative (Han) and exponential (SWD) schedules;
- :mod:`~slimtrain.pruning.baselines`: the penalties of the baselines (group lasso, nuclear norm,
  singular-value soft-thresholding, network slimming).
"""

from slimtrain._deprecation import moved_names
from slimtrain.pruning.baselines import (
    conv_weights,
    group_lasso_penalty,
    nuclear_norm_penalty,
    singular_value_soft_threshold_,
    slimming_penalty,
    smooth_l1_gamma,
)
from slimtrain.pruning.magnitude import per_tensor_magnitude_masks, smallest_magnitude_masks
from slimtrain.pruning.masks import MaskSet
from slimtrain.pruning.schedules import (
    CubicSchedule,
    ExponentialSchedule,
    IterativeSchedule,
    cubic_sparsity,
    iterative_targets,
)
from slimtrain.pruning.scores import batchnorm_gamma_scores, group_norm_scores, magnitude_scores
from slimtrain.pruning.selection import (
    SelectionRule,
    SelectionScope,
    TieRule,
    removal_count,
    removal_masks,
    smallest_k_mask,
    sorted_threshold,
    split_like,
)

__all__ = [
    "CubicSchedule",
    "ExponentialSchedule",
    "IterativeSchedule",
    "MaskSet",
    "SelectionRule",
    "SelectionScope",
    "TieRule",
    "batchnorm_gamma_scores",
    "conv_weights",
    "cubic_sparsity",
    "group_lasso_penalty",
    "group_norm_scores",
    "iterative_targets",
    "magnitude_scores",
    "nuclear_norm_penalty",
    "per_tensor_magnitude_masks",
    "removal_count",
    "removal_masks",
    "singular_value_soft_threshold_",
    "slimming_penalty",
    "smallest_k_mask",
    "smallest_magnitude_masks",
    "smooth_l1_gamma",
    "sorted_threshold",
    "split_like",
]

# Renamed so that the model-level slimtrain.compress.global_magnitude_masks keeps its name alone.
__getattr__ = moved_names(
    "slimtrain.pruning",
    {
        "global_magnitude_masks": "slimtrain.pruning.magnitude:smallest_magnitude_masks",
        "layerwise_magnitude_masks": "slimtrain.pruning.magnitude:per_tensor_magnitude_masks",
    },
)

"""Pruning primitives shared by SWD and the pruning baselines.

- :mod:`~slimtrain.pruning.magnitude`: exact global and per-layer magnitude masks.
- :mod:`~slimtrain.pruning.schedules`: sparsity schedules (Zhu & Gupta cubic, Han's cumulative targets).
- :mod:`~slimtrain.pruning.masking`: masks held on a model and re-applied after every optimizer step.
- :mod:`~slimtrain.pruning.slimming`: the network-slimming penalty on BatchNorm scales.
"""

from slimtrain._deprecation import moved_names
from slimtrain.pruning.magnitude import (
    per_tensor_magnitude_masks,
    removal_count,
    smallest_k_mask,
    smallest_magnitude_masks,
)
from slimtrain.pruning.masking import MaskSet
from slimtrain.pruning.schedules import cubic_sparsity, iterative_targets
from slimtrain.pruning.slimming import slimming_penalty, smooth_l1_gamma

__all__ = [
    "MaskSet",
    "cubic_sparsity",
    "iterative_targets",
    "per_tensor_magnitude_masks",
    "removal_count",
    "slimming_penalty",
    "smallest_k_mask",
    "smallest_magnitude_masks",
    "smooth_l1_gamma",
]

# Renamed so that the model-level slimtrain.compress.global_magnitude_masks keeps its name alone.
__getattr__ = moved_names(
    "slimtrain.pruning",
    {
        "global_magnitude_masks": "slimtrain.pruning.magnitude:smallest_magnitude_masks",
        "layerwise_magnitude_masks": "slimtrain.pruning.magnitude:per_tensor_magnitude_masks",
    },
)

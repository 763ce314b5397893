"""Pruning primitives shared by SWD and the pruning baselines.

- :mod:`~slimtrain.pruning.magnitude`: exact global and per-layer magnitude masks.
- :mod:`~slimtrain.pruning.schedules`: sparsity schedules (Zhu & Gupta cubic, Han's cumulative targets).
- :mod:`~slimtrain.pruning.masking`: masks held on a model and re-applied after every optimizer step.
- :mod:`~slimtrain.pruning.slimming`: the network-slimming penalty on BatchNorm scales.
"""

from slimtrain.pruning.magnitude import (
    global_magnitude_masks,
    layerwise_magnitude_masks,
    removal_count,
    smallest_k_mask,
)
from slimtrain.pruning.masking import MaskSet
from slimtrain.pruning.schedules import cubic_sparsity, iterative_targets
from slimtrain.pruning.slimming import slimming_penalty, smooth_l1_gamma

__all__ = [
    "MaskSet",
    "cubic_sparsity",
    "global_magnitude_masks",
    "iterative_targets",
    "layerwise_magnitude_masks",
    "removal_count",
    "slimming_penalty",
    "smallest_k_mask",
    "smooth_l1_gamma",
]

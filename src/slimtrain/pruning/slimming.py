"""Old home of the network-slimming penalty, now :mod:`slimtrain.pruning.baselines`."""

from slimtrain._deprecation import moved_names

__getattr__ = moved_names(
    "slimtrain.pruning.slimming",
    {name: f"slimtrain.pruning.baselines:{name}" for name in ("slimming_penalty", "smooth_l1_gamma")},
)

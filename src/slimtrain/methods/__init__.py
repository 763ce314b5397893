"""Built-in training methods; importing this package registers them with :mod:`slimtrain.train.method`."""

from slimtrain.methods.dense import DenseTraining
from slimtrain.methods.gradual_pruning import GradualMagnitudePruning
from slimtrain.methods.magnitude_pruning import LRRewinding, MagnitudePruningFineTune
from slimtrain.methods.network_slimming import NetworkSlimming
from slimtrain.methods.swd import SelectiveWeightDecayMethod, StructuredSWDMethod

__all__ = [
    "DenseTraining",
    "GradualMagnitudePruning",
    "LRRewinding",
    "MagnitudePruningFineTune",
    "NetworkSlimming",
    "SelectiveWeightDecayMethod",
    "StructuredSWDMethod",
]

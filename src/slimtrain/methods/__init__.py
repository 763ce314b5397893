"""Built-in training methods; importing this package registers them with :mod:`slimtrain.train.method`."""

from slimtrain.methods.dense import DenseTraining
from slimtrain.methods.gradual_pruning import GradualMagnitudePruning
from slimtrain.methods.magnitude_pruning import LRRewinding, MagnitudePruningFineTune
from slimtrain.methods.network_slimming import NetworkSlimming
from slimtrain.methods.nnbcd import NNBCDPruning, NNBCDTensorTrain
from slimtrain.methods.sfw import SFWMethod
from slimtrain.methods.structured_penalties import (
    GroupLassoTraining,
    NuclearNormTraining,
    ProximalSVDTraining,
)
from slimtrain.methods.swd import SelectiveWeightDecayMethod, StructuredSWDMethod
from slimtrain.methods.tdlrt import DLRTTraining, FixedRankTraining, TDLRTTraining
from slimtrain.methods.tt_sgd import TensorTrainSGD

__all__ = [
    "DLRTTraining",
    "DenseTraining",
    "FixedRankTraining",
    "GradualMagnitudePruning",
    "GroupLassoTraining",
    "LRRewinding",
    "MagnitudePruningFineTune",
    "NNBCDPruning",
    "NNBCDTensorTrain",
    "NetworkSlimming",
    "NuclearNormTraining",
    "ProximalSVDTraining",
    "SFWMethod",
    "SelectiveWeightDecayMethod",
    "StructuredSWDMethod",
    "TDLRTTraining",
    "TensorTrainSGD",
]

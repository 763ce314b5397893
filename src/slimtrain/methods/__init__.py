"""Built-in training methods; importing this package registers them with :mod:`slimtrain.train.method`."""

from slimtrain.methods.dense import DenseTraining
from slimtrain.methods.nnbcd import NNBCDPruning, NNBCDTensorTrain
from slimtrain.methods.sfw import SFWMethod
from slimtrain.methods.structured_penalties import (
    GroupLassoTraining,
    NuclearNormTraining,
    ProximalSVDTraining,
)
from slimtrain.methods.tdlrt import DLRTTraining, FixedRankTraining, TDLRTTraining
from slimtrain.methods.tt_sgd import TensorTrainSGD

__all__ = [
    "DLRTTraining",
    "DenseTraining",
    "FixedRankTraining",
    "GroupLassoTraining",
    "NNBCDPruning",
    "NNBCDTensorTrain",
    "NuclearNormTraining",
    "ProximalSVDTraining",
    "SFWMethod",
    "TDLRTTraining",
    "TensorTrainSGD",
]

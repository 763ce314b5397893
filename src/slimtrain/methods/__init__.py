"""Built-in training methods; importing this package registers them with :mod:`slimtrain.train.method`."""

from slimtrain.methods.dense import DenseTraining
from slimtrain.methods.sfw import SFWMethod
from slimtrain.methods.structured_penalties import (
    GroupLassoTraining,
    NuclearNormTraining,
    ProximalSVDTraining,
)
from slimtrain.methods.tdlrt import DLRTTraining, FixedRankTraining, TDLRTTraining

__all__ = [
    "DLRTTraining",
    "DenseTraining",
    "FixedRankTraining",
    "GroupLassoTraining",
    "NuclearNormTraining",
    "ProximalSVDTraining",
    "SFWMethod",
    "TDLRTTraining",
]

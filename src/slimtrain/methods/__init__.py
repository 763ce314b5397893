"""Built-in training methods; importing this package registers them with :mod:`slimtrain.train.method`."""

from slimtrain.methods.dense import DenseTraining
from slimtrain.methods.tdlrt import DLRTTraining, FixedRankTraining, TDLRTTraining

__all__ = ["DLRTTraining", "DenseTraining", "FixedRankTraining", "TDLRTTraining"]

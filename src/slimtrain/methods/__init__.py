"""Built-in training methods; importing this package registers them with :mod:`slimtrain.train.method`."""

from slimtrain.methods.dense import DenseTraining
from slimtrain.methods.nnbcd import NNBCDPruning, NNBCDTensorTrain
from slimtrain.methods.tt_sgd import TensorTrainSGD

__all__ = ["DenseTraining", "NNBCDPruning", "NNBCDTensorTrain", "TensorTrainSGD"]

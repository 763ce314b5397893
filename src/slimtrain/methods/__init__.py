"""Built-in training methods; importing this package registers them with :mod:`slimtrain.train.method`."""

from slimtrain.methods.dense import DenseTraining

__all__ = ["DenseTraining"]

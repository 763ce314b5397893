"""Built-in training methods; importing this package registers them with :mod:`slimtrain.train.method`."""

from slimtrain.methods.dense import DenseTraining
from slimtrain.methods.sfw import SFWMethod
from slimtrain.methods.structured_penalties import (
    GroupLassoTraining,
    NuclearNormTraining,
    ProximalSVDTraining,
)

__all__ = ["DenseTraining", "GroupLassoTraining", "NuclearNormTraining", "ProximalSVDTraining", "SFWMethod"]

"""Deprecated: the 1×1 convolution moved to :mod:`slimtrain.layers` (``pointwise_conv2d``)."""

from slimtrain._deprecation import moved_names

__getattr__ = moved_names("slimtrain.pointwise", {"pointwise_conv2d": "slimtrain.layers:pointwise_conv2d"})

"""Old home of :class:`~slimtrain.pruning.MaskSet`, now :mod:`slimtrain.pruning.masks`."""

from slimtrain._deprecation import moved_names

__getattr__ = moved_names("slimtrain.pruning.masking", {"MaskSet": "slimtrain.pruning.masks:MaskSet"})

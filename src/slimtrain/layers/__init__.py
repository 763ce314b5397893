"""Every layer slimtrain defines, and the export protocol that records and rebuilds them.

- Deployment layers (what an exported model contains): :class:`SVDConv2d` (k×k conv with ``rank`` filters
  then 1×1), :class:`TuckerConv2d` (1×1 → k×k → 1×1), :class:`LowRankLinear` (two linears),
  :class:`PointwiseConv2d` (a 1×1 conv run as a matrix product), :class:`SparseLinear` (CSR weights),
  :class:`TTLinear` (weight stored as tensor-train cores).
- Training-time factorized layers (TDLRT / DLRT, orthonormal bases and a core, trained by
  :class:`slimtrain.lowrank.TDLRT`): :class:`TuckerFactorizedConv2d`, :class:`MatrixFactorizedLinear`,
  :class:`MatrixFactorizedConv2d` (base classes :class:`TuckerFactorizedLayer` and
  :class:`MatrixFactorizedLayer`); each is a :class:`TrainingLayer`, whose ``to_deployment()`` gives the
  deployment layer of its trained ranks. Their rank options are one frozen :class:`RankConfig`.
- The export protocol (:mod:`slimtrain.layers.specs`): :data:`LAYER_TYPES`, a registry of namespaced keys
  (``"slimtrain.TuckerConv2d"``, ``"torch.nn.Conv2d"``) third-party code extends with
  :func:`register_layer_type`; :func:`layer_config` / :func:`build_layer` record and rebuild a layer.
"""

from slimtrain.layers import torch_types as _torch_types  # noqa: F401  (registers the torch.nn types)
from slimtrain.layers.factor_base import MatrixFactorizedLayer, RankConfig, TuckerFactorizedLayer
from slimtrain.layers.factorized import LowRankLinear, SVDConv2d, TuckerConv2d
from slimtrain.layers.matrix_factorized import MatrixFactorizedConv2d, MatrixFactorizedLinear
from slimtrain.layers.pointwise import PointwiseConv2d, pointwise_conv2d
from slimtrain.layers.sparse import SparseLinear
from slimtrain.layers.specs import (
    LAYER_TYPES,
    LayerType,
    TrainingLayer,
    build_layer,
    layer_config,
    layer_type_of,
    register_layer_type,
    reshape_layer,
)
from slimtrain.layers.tensor_train import TTLinear
from slimtrain.layers.tucker_factorized import TuckerFactorizedConv2d

__all__ = [
    "LAYER_TYPES",
    "LayerType",
    "LowRankLinear",
    "MatrixFactorizedConv2d",
    "MatrixFactorizedLayer",
    "MatrixFactorizedLinear",
    "PointwiseConv2d",
    "RankConfig",
    "SVDConv2d",
    "SparseLinear",
    "TTLinear",
    "TrainingLayer",
    "TuckerConv2d",
    "TuckerFactorizedConv2d",
    "TuckerFactorizedLayer",
    "build_layer",
    "layer_config",
    "layer_type_of",
    "pointwise_conv2d",
    "register_layer_type",
    "reshape_layer",
]

from slimtrain.layers.replacement import (
    PARAMETER_READERS,
    REPLACEABLE_SUBCLASSES,
    LayersLeftDenseWarning,
    register_parameter_reader,
    register_replaceable_subclass,
)

__all__ += [
    "PARAMETER_READERS",
    "REPLACEABLE_SUBCLASSES",
    "LayersLeftDenseWarning",
    "register_parameter_reader",
    "register_replaceable_subclass",
]

from slimtrain.layers.prunable import PRUNABLE_TYPES, prunable_weights, register_prunable  # noqa: E402

__all__ += ["PRUNABLE_TYPES", "prunable_weights", "register_prunable"]

"""Low-rank training: the rank-adaptive TDLRT/DLRT integrator and the conversion of a model's layers.

Zangrando et al., arXiv:2305.19059 (TDLRT); Schotthöfer et al., arXiv:2205.13571 (DLRT). The layers it trains
(:class:`slimtrain.layers.TuckerFactorizedConv2d`, :class:`~slimtrain.layers.MatrixFactorizedLinear`,
:class:`~slimtrain.layers.MatrixFactorizedConv2d`, with their :class:`~slimtrain.layers.RankConfig`) live in
:mod:`slimtrain.layers`. The options of the integrator and of the conversion are the frozen
:class:`TDLRTConfig` and :class:`ConversionConfig`. See ``docs/tdlrt.md``.
"""

from slimtrain._deprecation import moved_names
from slimtrain.lowrank.conversion import (
    ConversionConfig,
    convert_to_lowrank,
    factorized_layers,
    to_dense_model,
)
from slimtrain.lowrank.integrator import TDLRT, RankAtMinimumWarning, TDLRTConfig, transport_state_tensor
from slimtrain.lowrank.report import LayerRankReport, lowrank_report

__all__ = [
    "TDLRT",
    "ConversionConfig",
    "LayerRankReport",
    "RankAtMinimumWarning",
    "TDLRTConfig",
    "convert_to_lowrank",
    "factorized_layers",
    "lowrank_report",
    "to_dense_model",
    "transport_state_tensor",
]

# The training layers moved to slimtrain.layers, under names distinct from the deployment layers'.
__getattr__ = moved_names(
    "slimtrain.lowrank",
    {
        "TuckerConv2d": "slimtrain.layers:TuckerFactorizedConv2d",
        "LowRankLinear": "slimtrain.layers:MatrixFactorizedLinear",
        "MatrixLowRankConv2d": "slimtrain.layers:MatrixFactorizedConv2d",
        "TuckerFactorizedLayer": "slimtrain.layers:TuckerFactorizedLayer",
        "MatrixFactorizedLayer": "slimtrain.layers:MatrixFactorizedLayer",
    },
)

# The replacement rule's warning (defined in slimtrain.layers.replacement), for callers of the operators here.
from slimtrain.layers.replacement import LayersLeftDenseWarning

__all__ += ["LayersLeftDenseWarning"]

"""Low-rank training: Tucker convolutions, low-rank linears and the rank-adaptive TDLRT/DLRT integrator.

Zangrando et al., arXiv:2305.19059 (TDLRT); Schotthöfer et al., arXiv:2205.13571 (DLRT). See
``docs/tdlrt.md`` for a walk-through.
"""

from slimtrain.lowrank.conversion import convert_to_lowrank, factorized_layers, to_dense_model
from slimtrain.lowrank.factorized import MatrixFactorizedLayer, TuckerFactorizedLayer
from slimtrain.lowrank.integrator import TDLRT, RankAtMinimumWarning, transport_state_tensor
from slimtrain.lowrank.matrix_layers import LowRankLinear, MatrixLowRankConv2d
from slimtrain.lowrank.report import LayerRankReport, lowrank_report
from slimtrain.lowrank.tucker_conv import TuckerConv2d

__all__ = [
    "TDLRT",
    "LayerRankReport",
    "LowRankLinear",
    "MatrixFactorizedLayer",
    "MatrixLowRankConv2d",
    "RankAtMinimumWarning",
    "TuckerConv2d",
    "TuckerFactorizedLayer",
    "convert_to_lowrank",
    "factorized_layers",
    "lowrank_report",
    "to_dense_model",
    "transport_state_tensor",
]

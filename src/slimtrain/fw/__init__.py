"""Frank-Wolfe training: constraint sets with their LMOs, radius selection and the SFW optimizer.

Zimmer, Spiegel, Pokutta, "Compression-aware Training of Neural Networks using Frank-Wolfe",
arXiv:2205.11921; Miao et al., ICLR 2022 (K-sparse polytope). See ``docs/sfw.md``.
"""

from slimtrain._deprecation import moved_names
from slimtrain.fw import native
from slimtrain.fw.base import ConstraintSet, KConstraintSet, constraint_from_config, resolve_k
from slimtrain.fw.builder import ConstraintsConfig, build_constraints, miao_k
from slimtrain.fw.ksparse import KSparsePolytope
from slimtrain.fw.ksupport import GroupKSupportNormBall, KSupportNormBall, k_support_norm
from slimtrain.fw.lp_balls import LpBall
from slimtrain.fw.penalties import MOVED_TO_BASELINES
from slimtrain.fw.radius import estimate_init_norms, local_init_norms
from slimtrain.fw.sfw import SFW
from slimtrain.fw.spectral import (
    NuclearNormBall,
    SpectralKSparsePolytope,
    SpectralKSupportNormBall,
    top_k_singular,
)

__all__ = [
    "SFW",
    "ConstraintSet",
    "ConstraintsConfig",
    "GroupKSupportNormBall",
    "KConstraintSet",
    "KSparsePolytope",
    "KSupportNormBall",
    "LpBall",
    "NuclearNormBall",
    "SpectralKSparsePolytope",
    "SpectralKSupportNormBall",
    "build_constraints",
    "constraint_from_config",
    "estimate_init_norms",
    "k_support_norm",
    "local_init_norms",
    "miao_k",
    "native",
    "resolve_k",
    "top_k_singular",
]

# The penalties of SFW's baselines live with the baselines (slimtrain.pruning.baselines).
__getattr__ = moved_names("slimtrain.fw", MOVED_TO_BASELINES)

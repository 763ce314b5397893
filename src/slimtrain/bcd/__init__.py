"""NN-BCD: gradient-free block coordinate descent for tensor-train and pruned ReLU networks.

Li et al., "On Model Compression for Neural Networks: Framework, Algorithm, and Convergence Guarantee",
arXiv:2303.06815; see docs/nnbcd.md.
"""

from slimtrain._deprecation import moved_names
from slimtrain.bcd.conv_im2col import ChannelLastFlatten, Im2colConv
from slimtrain.bcd.copies import CompressedCopy, PrunedCopy, TensorTrainCopy
from slimtrain.bcd.memory import estimate_full_batch_bytes, max_full_batch_samples
from slimtrain.bcd.objective import ObjectiveTerms, penalized_objective
from slimtrain.bcd.prune import hard_threshold
from slimtrain.bcd.ratio import StorageFractions, module_storage_fractions, tt_storage_fractions
from slimtrain.bcd.relu_prox import relu_prox
from slimtrain.bcd.solver import NNBCD, NNBCDConfig, ObjectiveIncreaseWarning, SweepRecord
from slimtrain.bcd.tt_als import tt_als_sweep
from slimtrain.errors import FullBatchMemoryError

__all__ = [
    "NNBCD",
    "ChannelLastFlatten",
    "CompressedCopy",
    "FullBatchMemoryError",
    "Im2colConv",
    "NNBCDConfig",
    "ObjectiveIncreaseWarning",
    "ObjectiveTerms",
    "PrunedCopy",
    "StorageFractions",
    "SweepRecord",
    "TensorTrainCopy",
    "estimate_full_batch_bytes",
    "hard_threshold",
    "max_full_batch_samples",
    "module_storage_fractions",
    "penalized_objective",
    "relu_prox",
    "tt_als_sweep",
    "tt_storage_fractions",
]

# The tensor-train layer moved to slimtrain.layers and the TT algebra to slimtrain.algebra.tt.
__getattr__ = moved_names(
    "slimtrain.bcd",
    {
        "TTLinear": "slimtrain.layers:TTLinear",
        **{
            name: f"slimtrain.algebra.tt:{name}"
            for name in ("TTSVDResult", "tt_ranks", "tt_reconstruct", "tt_storage", "tt_svd", "tt_svd_matrix")
        },
    },
)

"""Parameter, sparsity, MAC, ratio, latency and memory metrics, each with one name (docs/metrics.md).

Every quantity states its population (``all``, ``prunable``, ``compressed``) and whether it refers to a
masked or an exported model. Main entry points: :func:`summarize` (the report fields of one model),
:func:`layer_table`, :func:`measure_latency`, :func:`measure_peak_memory`.
"""

from slimtrain._deprecation import moved_names
from slimtrain.algebra.tt import tt_ranks, tt_storage
from slimtrain.layers.counts import (
    dlrt_train_parameter_count,
    svd_parameter_count,
    tucker_augmented_ranks,
    tucker_parameter_count,
    tucker_train_parameter_count,
)
from slimtrain.metrics.counting import (
    ParameterTotals,
    TensorCount,
    count_parameters,
    count_tensors,
    density,
    factorized_modules,
    sparsity,
    sparsity_per_layer,
)
from slimtrain.metrics.dlrt_conventions import (
    cr_percent_eval_dlrt_convention,
    cr_percent_eval_factorized_only,
    cr_percent_train_dlrt,
    cr_percent_train_tucker,
)
from slimtrain.metrics.effective_sparsity import effective_sparsity, effective_weight_masks
from slimtrain.metrics.factorized import FactorizedLayer
from slimtrain.metrics.fields import upgrade_row
from slimtrain.metrics.latency import (
    NOISY_RELATIVE_IQR,
    LatencyResult,
    SpeedupSpread,
    describe_latency,
    is_noisy,
    latency_fields,
    latency_result_fields,
    measure_latency,
    measured_speedup,
    measured_speedup_spread,
)
from slimtrain.metrics.mac_formulas import (
    conv2d_macs,
    linear_macs,
    svd_conv_macs,
    svd_linear_macs,
    theoretical_speedup,
    tucker_conv_macs,
)
from slimtrain.metrics.macs import LayerMacs, MacsCount, count_macs
from slimtrain.metrics.memory import PeakMemory, measure_peak_memory
from slimtrain.metrics.populations import ALL, PRUNABLE, Population, compressed
from slimtrain.metrics.ratios import (
    compression_ratio,
    compression_ratio_from_sparsity,
    cr_percent,
    level_rel_error,
    storage_fraction,
)
from slimtrain.metrics.sparse_weight import SparseWeightLayer
from slimtrain.metrics.summary import compressed_model_fields, keeps_zeros, ranks_per_layer, summarize
from slimtrain.metrics.table import layer_table
from slimtrain.models.sizes import conv_output_size

__all__ = [
    "ALL",
    "NOISY_RELATIVE_IQR",
    "PRUNABLE",
    "FactorizedLayer",
    "LatencyResult",
    "LayerMacs",
    "MacsCount",
    "ParameterTotals",
    "PeakMemory",
    "Population",
    "SparseWeightLayer",
    "SpeedupSpread",
    "TensorCount",
    "compressed",
    "compressed_model_fields",
    "compression_ratio",
    "compression_ratio_from_sparsity",
    "conv2d_macs",
    "conv_output_size",
    "count_macs",
    "count_parameters",
    "count_tensors",
    "cr_percent",
    "cr_percent_eval_dlrt_convention",
    "cr_percent_eval_factorized_only",
    "cr_percent_train_dlrt",
    "cr_percent_train_tucker",
    "density",
    "describe_latency",
    "dlrt_train_parameter_count",
    "effective_sparsity",
    "effective_weight_masks",
    "factorized_modules",
    "is_noisy",
    "keeps_zeros",
    "latency_fields",
    "latency_result_fields",
    "layer_table",
    "level_rel_error",
    "linear_macs",
    "measure_latency",
    "measure_peak_memory",
    "measured_speedup",
    "measured_speedup_spread",
    "ranks_per_layer",
    "sparsity",
    "sparsity_per_layer",
    "storage_fraction",
    "summarize",
    "svd_conv_macs",
    "svd_linear_macs",
    "svd_parameter_count",
    "theoretical_speedup",
    "tt_ranks",
    "tt_storage",
    "tucker_augmented_ranks",
    "tucker_conv_macs",
    "tucker_parameter_count",
    "tucker_train_parameter_count",
    "upgrade_row",
]

# One name per count: the tensor-train storage is slimtrain.algebra.tt.tt_storage.
__getattr__ = moved_names("slimtrain.metrics", {"tt_parameter_count": "slimtrain.algebra.tt:tt_storage"})

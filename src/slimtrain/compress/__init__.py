"""Post-training compression operators and export of physically smaller models.

Operators return a compressed **copy** and never modify their input:

- unstructured: :func:`global_magnitude_prune`, :func:`layerwise_magnitude_prune` (masks folded into weights),
  :func:`to_sparse_linear` (CSR storage for linear layers, :class:`slimtrain.layers.SparseLinear`);
- structured: :func:`filter_pruning_plan` → :func:`apply_channel_masks` (masked, same shapes) or
  :func:`remove_channels` (channels physically removed, same function);
- low rank: :func:`svd_decompose` (k×k + 1×1 conv pairs, two linears), :func:`tucker_decompose`
  (1×1 → k×k → 1×1), both with the deployment layers of :mod:`slimtrain.layers`;
- export: :func:`to_exported` (a compressed model → its physically smaller form, same function),
  :func:`save_exported` / :func:`load_exported` (safetensors + JSON manifest), :func:`export_onnx`.
"""

from slimtrain._deprecation import moved_names
from slimtrain.compress.channel_groups import ChannelGroup, ChannelSlice
from slimtrain.compress.csr import to_sparse_linear
from slimtrain.compress.decompose import FactorizationCostWarning, kept_rank, svd_decompose, tucker_decompose
from slimtrain.compress.densify import densify
from slimtrain.compress.exportable import (
    check_same_outputs,
    export_lowrank_layers,
    removable_channels,
    remove_zero_channels,
    to_exported,
)
from slimtrain.compress.exported_format import (
    architecture_changes,
    finish_interrupted_save,
    load_exported,
    read_manifest,
    save_exported,
)
from slimtrain.compress.filter_pruning import (
    ChannelPruningPlan,
    GroupSelection,
    apply_channel_masks,
    channel_masks,
    channels_kept,
    filter_pruning_plan,
    group_l1_scores,
    remove_channels,
)
from slimtrain.compress.magnitude import (
    global_magnitude_masks,
    global_magnitude_prune,
    layerwise_magnitude_masks,
    layerwise_magnitude_prune,
    population_parameters,
)
from slimtrain.compress.masks import apply_masks, fold_masks
from slimtrain.compress.onnx_export import export_onnx
from slimtrain.compress.standard import STRUCTURES, compress_standard
from slimtrain.compress.torch_pruning_adapter import (
    check_channel_flow,
    coupled_channel_groups,
)
from slimtrain.errors import (
    ExportFormatError,
    ExportMismatchError,
    OnnxMismatchError,
    UnsupportedChannelFlowError,
)

__all__ = [
    "STRUCTURES",
    "ChannelGroup",
    "ChannelPruningPlan",
    "ChannelSlice",
    "ExportFormatError",
    "ExportMismatchError",
    "FactorizationCostWarning",
    "GroupSelection",
    "OnnxMismatchError",
    "UnsupportedChannelFlowError",
    "apply_channel_masks",
    "apply_masks",
    "architecture_changes",
    "channel_masks",
    "channels_kept",
    "check_channel_flow",
    "check_same_outputs",
    "compress_standard",
    "coupled_channel_groups",
    "densify",
    "export_lowrank_layers",
    "export_onnx",
    "filter_pruning_plan",
    "finish_interrupted_save",
    "fold_masks",
    "global_magnitude_masks",
    "global_magnitude_prune",
    "group_l1_scores",
    "kept_rank",
    "layerwise_magnitude_masks",
    "layerwise_magnitude_prune",
    "load_exported",
    "population_parameters",
    "read_manifest",
    "removable_channels",
    "remove_channels",
    "remove_zero_channels",
    "save_exported",
    "svd_decompose",
    "to_exported",
    "to_sparse_linear",
    "tucker_decompose",
]

# Moved to slimtrain.layers (the one layer package); the old names warn for one release.
__getattr__ = moved_names(
    "slimtrain.compress",
    {
        "LAYER_TYPES": "slimtrain.layers:LAYER_TYPES",
        "LowRankLinear": "slimtrain.layers:LowRankLinear",
        "PointwiseConv2d": "slimtrain.layers:PointwiseConv2d",
        "SVDConv2d": "slimtrain.layers:SVDConv2d",
        "SparseLinear": "slimtrain.layers:SparseLinear",
        "TuckerConv2d": "slimtrain.layers:TuckerConv2d",
        "build_module": "slimtrain.layers:build_layer",
        "module_config": "slimtrain.layers:layer_config",
    },
)

# The replacement rule's warning (defined in slimtrain.layers.replacement), for callers of the operators here.
from slimtrain.layers.replacement import LayersLeftDenseWarning

__all__ += ["LayersLeftDenseWarning"]

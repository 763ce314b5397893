"""Turn an exported model back into plain dense layers (the "reconstructed" model of docs/metrics.md)."""

from __future__ import annotations

from torch import nn

from slimtrain.compress._modules import copy_model, set_submodule
from slimtrain.layers import LowRankLinear, SparseLinear, SVDConv2d, TuckerConv2d

_DENSIFIABLE = (SVDConv2d, TuckerConv2d, LowRankLinear, SparseLinear)


def densify(model: nn.Module) -> nn.Module:
    """Return a copy of ``model`` with every factorized or CSR layer replaced by its dense equivalent.

    The result computes the same function with the original layer shapes (reconstructed low-rank kernels,
    zeros stored densely); it is the reference the exported model is compared with.
    """
    result = copy_model(model, "densify")
    for name, module in list(result.named_modules()):
        if isinstance(module, _DENSIFIABLE):
            set_submodule(result, name, module.to_dense())
    return result

"""Binary masks over named parameters: apply them to a copy, and fold mask re-parametrizations away.

A mask dictionary maps a parameter name (as in ``model.named_parameters()``) to a boolean tensor of the same
shape, ``True`` where the entry is kept. Applying masks is the sparsity core's
(:class:`slimtrain.pruning.MaskSet`); this module names its copy semantics for the compression operators.
Names are those of the unwrapped model (:mod:`slimtrain._wrappers`), for a model inside a wrapper too.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.nn.utils import parametrize, prune

from slimtrain._wrappers import copy_model, unwrap_model
from slimtrain.layers.prunable import make_plain
from slimtrain.pruning.masks import MaskSet


def apply_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> nn.Module:
    """Return a copy of ``model`` whose masked parameters have their dropped entries set to zero.

    ``MaskSet(model, masks).applied_to_copy()``: the masks are folded into the weights (no hooks or
    re-parametrizations are left behind).

    Args:
        model: The model (not modified). A ``torch.compile`` wrapper is copied whole; a data-parallel wrapper
            is refused: pass ``model.module``, to which masks computed on the wrapper apply.
        masks: Parameter name of the unwrapped model (:func:`~slimtrain._wrappers.unwrap_model`) → boolean
            keep-mask of the parameter's shape; a shared (tied) parameter may be
            named by any of its names, and its mask holds for all of them. A computed weight (a
            ``torch.nn.utils.parametrize`` parametrization such as ``weight_norm``, or a
            ``torch.nn.utils.prune`` mask) is named ``"<module>.<name>"``: its current value becomes a plain
            parameter of the copy (the parametrization is removed), which is then masked — the copy computes
            exactly the masked effective weight (docs/metrics.md#populations).

    Returns:
        The masked copy.

    Raises:
        KeyError: If a mask names neither a parameter nor a computed weight of the model.
        ValueError: If a mask's shape differs from its parameter's.
        UnsupportedModelError: If ``model`` is a data-parallel wrapper.
    """
    result = copy_model(model, "apply_masks")
    MaskSet(unwrap_model(result), masks).apply_()
    return result


def fold_masks(model: nn.Module) -> nn.Module:
    """Return a copy of ``model`` with pruning re-parametrizations folded into plain parameters.

    Removes ``torch.nn.utils.prune`` forward pre-hooks (``weight_orig`` · ``weight_mask`` becomes ``weight``)
    and ``torch.nn.utils.parametrize`` parametrizations (their current value is kept), so that the state dict
    has the plain layer keys and exports cleanly.
    """
    result = copy_model(model, "fold_masks")
    for module in result.modules():
        names = [
            h._tensor_name
            for h in module._forward_pre_hooks.values()
            if isinstance(h, prune.BasePruningMethod)
        ]
        if parametrize.is_parametrized(module):
            names += list(module.parametrizations.keys())
        for name in names:
            make_plain(module, name)
    return result

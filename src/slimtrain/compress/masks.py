"""Binary masks over named parameters: apply them to a copy, and fold mask re-parametrizations away.

A mask dictionary maps a parameter name (as in ``model.named_parameters()``) to a boolean tensor of the same
shape, ``True`` where the entry is kept.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.nn.utils import parametrize, prune

from slimtrain.compress._modules import copy_model


def apply_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> nn.Module:
    """Return a copy of ``model`` whose masked parameters have their dropped entries set to zero.

    The masks are folded into the weights (no hooks or re-parametrizations are left behind).

    Args:
        model: The model (not modified).
        masks: Parameter name → boolean keep-mask of the parameter's shape; a shared (tied) parameter may be
            named by any of its names, and its mask holds for all of them.

    Returns:
        The masked copy.

    Raises:
        KeyError: If a mask names no parameter of the model.
        ValueError: If a mask's shape differs from its parameter's.
    """
    result = copy_model(model)
    params = dict(result.named_parameters(remove_duplicate=False))
    for name, mask in masks.items():
        if name not in params:
            raise KeyError(f"mask for {name!r}, which is not a parameter of the model")
        if mask.shape != params[name].shape:
            raise ValueError(
                f"mask for {name!r} has shape {tuple(mask.shape)}, the parameter {tuple(params[name].shape)}"
            )
        with torch.no_grad():
            params[name].mul_(mask.to(device=params[name].device, dtype=params[name].dtype))
    return result


def fold_masks(model: nn.Module) -> nn.Module:
    """Return a copy of ``model`` with pruning re-parametrizations folded into plain parameters.

    Removes ``torch.nn.utils.prune`` forward pre-hooks (``weight_orig`` · ``weight_mask`` becomes ``weight``)
    and ``torch.nn.utils.parametrize`` parametrizations (their current value is kept), so that the state dict
    has the plain layer keys and exports cleanly.
    """
    result = copy_model(model)
    for module in result.modules():
        if prune.is_pruned(module):
            for hook in list(module._forward_pre_hooks.values()):
                if isinstance(hook, prune.BasePruningMethod):
                    prune.remove(module, hook._tensor_name)
        if parametrize.is_parametrized(module):
            for name in list(module.parametrizations.keys()):
                parametrize.remove_parametrizations(module, name, leave_parametrized=True)
    return result

"""Helpers to copy a model and to look up or replace sub-modules by qualified name."""

from __future__ import annotations

import copy

import torch
from torch import nn

from slimtrain._wrappers import refuse_data_parallel

KEPT_CHANNELS_ATTR = "slimtrain_kept_channels"
"""Attribute a thinned (or thinned-then-factorized) layer carries: ``{"out": [...], "in": [...]}``, the kept
channel indices relative to the original model; recorded in the export manifest."""


def copy_model(model: nn.Module, what: str = "this operation") -> nn.Module:
    """Return a deep copy of ``model`` (compression operators never mutate their input).

    A data-parallel wrapper is refused (its copy would carry the process group): pass ``model.module``.

    Computed tensor attributes (e.g. the ``weight`` that ``torch.nn.utils.prune`` derives from ``weight_orig``
    and ``weight_mask``) are not graph leaves and cannot be deep-copied; they are copied detached, which
    is harmless because their owners recompute them on every forward pass.
    """
    refuse_data_parallel(model, what)
    memo: dict[int, object] = {}
    for module in model.modules():
        for value in vars(module).values():
            if isinstance(value, torch.Tensor) and not value.is_leaf:
                memo[id(value)] = value.detach().clone()
    return copy.deepcopy(model, memo)


def get_submodule(model: nn.Module, name: str) -> nn.Module:
    """Return the sub-module called ``name`` or raise a ``KeyError`` naming it."""
    try:
        return model.get_submodule(name)
    except AttributeError as error:
        raise KeyError(f"model has no sub-module named {name!r}") from error


def set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    """Replace the sub-module called ``name`` (a dotted path) by ``module``."""
    parent_name, _, child = name.rpartition(".")
    parent = get_submodule(model, parent_name) if parent_name else model
    if child not in parent._modules:
        raise KeyError(f"model has no sub-module named {name!r}")
    parent._modules[child] = module

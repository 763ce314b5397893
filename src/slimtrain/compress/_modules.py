"""Helpers to copy a model and to look up or replace sub-modules by qualified name."""

from __future__ import annotations

from torch import nn

from slimtrain._wrappers import copy_model as copy_model  # re-exported: the compress operators copy first

KEPT_CHANNELS_ATTR = "slimtrain_kept_channels"
"""Attribute a thinned (or thinned-then-factorized) layer carries: ``{"out": [...], "in": [...]}``, the kept
channel indices relative to the original model; recorded in the export manifest."""


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

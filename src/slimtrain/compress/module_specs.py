"""Layer types an exported model may contain, with their constructor arguments as JSON.

This table is what lets :func:`slimtrain.compress.load_exported` rebuild a model without unpickling
classes: a layer is recorded by type name and constructor arguments, and rebuilt from them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from slimtrain.bcd.tt_linear import TTLinear
from slimtrain.compress.factorized import LowRankLinear, SVDConv2d, TuckerConv2d
from slimtrain.compress.sparse_linear import SparseLinear


def _conv_config(m: nn.Module) -> dict[str, Any]:
    return {
        "in_channels": m.in_channels,
        "out_channels": m.out_channels,
        "kernel_size": list(m.kernel_size),
        "stride": list(m.stride),
        "padding": m.padding if isinstance(m.padding, str) else list(m.padding),
        "dilation": list(m.dilation),
        "groups": m.groups,
        "bias": m.bias is not None,
        "padding_mode": m.padding_mode,
    }


def _batchnorm_config(m: nn.Module) -> dict[str, Any]:
    return {
        "num_features": m.num_features,
        "eps": m.eps,
        "momentum": m.momentum,
        "affine": m.affine,
        "track_running_stats": m.track_running_stats,
    }


_CONFIG: dict[type[nn.Module], Callable[[nn.Module], dict[str, Any]]] = {
    nn.Conv1d: _conv_config,
    nn.Conv2d: _conv_config,
    nn.Linear: lambda m: {
        "in_features": m.in_features,
        "out_features": m.out_features,
        "bias": m.bias is not None,
    },
    nn.BatchNorm1d: _batchnorm_config,
    nn.BatchNorm2d: _batchnorm_config,
    nn.Identity: lambda m: {},
    SVDConv2d: SVDConv2d.config,
    TuckerConv2d: TuckerConv2d.config,
    LowRankLinear: LowRankLinear.config,
    SparseLinear: SparseLinear.config,
    TTLinear: TTLinear.config,
}
# Layers built from their config by a named constructor rather than ``__init__``.
_BUILDERS: dict[type[nn.Module], Callable[..., nn.Module]] = {TTLinear: TTLinear.from_config}
LAYER_TYPES: dict[str, type[nn.Module]] = {cls.__name__: cls for cls in _CONFIG}
"""Type name → class of every layer type an exported model may replace or reshape."""


def is_rebuildable(module: nn.Module) -> bool:
    """Return whether ``module``'s exact type is in :data:`LAYER_TYPES`."""
    return type(module) in _CONFIG


def module_config(module: nn.Module) -> dict[str, Any]:
    """Return the JSON constructor arguments of a rebuildable layer.

    Raises:
        TypeError: If the layer's type is not in :data:`LAYER_TYPES`.
    """
    if not is_rebuildable(module):
        raise TypeError(f"{type(module).__name__} is not a rebuildable layer type ({', '.join(LAYER_TYPES)})")
    return _CONFIG[type(module)](module)


def build_module(type_name: str, config: dict[str, Any]) -> nn.Module:
    """Construct a layer from its type name and :func:`module_config` arguments.

    Raises:
        ValueError: If the type is unknown or the arguments do not fit its constructor.
    """
    if type_name not in LAYER_TYPES:
        raise ValueError(f"unknown layer type {type_name!r}; known types: {', '.join(LAYER_TYPES)}")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}
    try:
        cls = LAYER_TYPES[type_name]
        return _BUILDERS.get(cls, cls)(**kwargs)
    except (TypeError, ValueError) as error:
        raise ValueError(f"cannot build {type_name} from {config}: {error}") from error

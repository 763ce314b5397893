"""The ``torch.nn`` layers an export may re-shape or replace, registered as export layer types."""

from __future__ import annotations

from typing import Any

from torch import nn

from slimtrain.layers.specs import register_layer_type


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


def _conv_transpose_config(m: nn.Module) -> dict[str, Any]:
    config = _conv_config(m)
    config["output_padding"] = list(m.output_padding)
    return config


def _linear_config(m: nn.Module) -> dict[str, Any]:
    return {"in_features": m.in_features, "out_features": m.out_features, "bias": m.bias is not None}


def _batchnorm_config(m: nn.Module) -> dict[str, Any]:
    return {
        "num_features": m.num_features,
        "eps": m.eps,
        "momentum": m.momentum,
        "affine": m.affine,
        "track_running_stats": m.track_running_stats,
    }


for _cls, _config in (
    (nn.Conv1d, _conv_config),
    (nn.Conv2d, _conv_config),
    (nn.Linear, _linear_config),
    (nn.BatchNorm1d, _batchnorm_config),
    (nn.BatchNorm2d, _batchnorm_config),
    (nn.Identity, lambda m: {}),
):
    register_layer_type(f"torch.nn.{_cls.__name__}", _cls, config=_config, v1_name=_cls.__name__)

# Registered after format 1, so without a bare format-1 name.
for _cls, _config in (
    (nn.Conv3d, _conv_config),
    (nn.ConvTranspose1d, _conv_transpose_config),
    (nn.ConvTranspose2d, _conv_transpose_config),
    (nn.ConvTranspose3d, _conv_transpose_config),
    (nn.BatchNorm3d, _batchnorm_config),
):
    register_layer_type(f"torch.nn.{_cls.__name__}", _cls, config=_config)

"""Post-training low-rank decomposition: per-layer truncated matrix SVD and Tucker-2 (HOSVD).

Uniform rank fraction as in the SFW evaluation protocol (Zimmer et al., arXiv:2205.11921;
docs/sfw.md#evaluation-protocol): with ``reduction`` = s, a layer whose full rank is R keeps r = max(1, ⌊(1 −
s)·R⌋). The input model is never modified; the returned copy has its layers replaced by the modules of
:mod:`slimtrain.compress.factorized`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Mapping

from torch import nn

from slimtrain._materialized import refuse_unmaterialized
from slimtrain._shared_params import refuse_shared
from slimtrain.compress._modules import KEPT_CHANNELS_ATTR, copy_model, get_submodule, set_submodule
from slimtrain.errors import UnknownNameError
from slimtrain.layers import LowRankLinear, SVDConv2d, TuckerConv2d
from slimtrain.layers.factorized import FACTORIZED_DEPLOYMENT_LAYERS
from slimtrain.layers.replacement import CONVOLUTIONS, LINEARS, Replacement, select_replaceable, some_names


class FactorizationCostWarning(UserWarning):
    """A chosen rank makes the factorized layer store more parameters or cost more MACs than the dense one."""


def kept_rank(full_rank: int, reduction: float) -> int:
    """Return r = max(1, ⌊(1 − reduction)·full_rank⌋).

    A tolerance of 1e-9 absorbs float error so that, e.g., (1 − 0.9)·10 keeps 1 and (1 − 0.7)·10 keeps 3.

    Raises:
        ValueError: If ``reduction`` is outside [0, 1].
    """
    if not 0.0 <= reduction <= 1.0:
        raise ValueError(f"reduction must be in [0, 1], got {reduction!r}")
    return max(1, math.floor((1.0 - reduction) * full_rank + 1e-9))


def _tucker_refusal(conv: nn.Module) -> str | None:
    if conv.groups != 1:
        return f"grouped convolution (groups={conv.groups}): Tucker-2 factorization needs groups=1"
    return None


def _operator(
    what: str, include_linear: bool, check: Callable[[nn.Module], str | None] | None = None
) -> Replacement:
    """The :class:`Replacement` of a factorization: convolutions, and linears if ``include_linear``."""
    types: tuple[type[nn.Module], ...] = (nn.Conv2d, nn.Linear) if include_linear else (nn.Conv2d,)
    family = (*CONVOLUTIONS, *LINEARS) if include_linear else CONVOLUTIONS
    name = "convolution or linear" if include_linear else "convolution"
    return Replacement(what, types, family, name, check, inside=FACTORIZED_DEPLOYMENT_LAYERS)


def _warn_if_costlier(
    name: str, dense_params: int, factored_params: int, dense_macs: int, factored_macs: int
) -> None:
    if factored_params >= dense_params or factored_macs >= dense_macs:
        warnings.warn(
            f"layer {name!r}: the chosen rank gives {factored_params} parameters and {factored_macs} MACs "
            f"per output position against {dense_params} and {dense_macs} dense; the factorized layer is "
            "not cheaper",
            FactorizationCostWarning,
            stacklevel=3,
        )


def _refuse_unknown_ranks(ranks: Mapping[str, object], names: list[str]) -> None:
    unknown = sorted(set(ranks) - set(names))
    if unknown:
        raise UnknownNameError(
            f"ranks= given for layers that are not decomposed: {', '.join(map(repr, unknown))}; "
            f"{some_names(names)}"
        )


def _replace(model: nn.Module, name: str, dense: nn.Module, factored: nn.Module) -> None:
    kept = getattr(dense, KEPT_CHANNELS_ATTR, None)
    if kept is not None:
        setattr(factored, KEPT_CHANNELS_ATTR, kept)
    if not dense.weight.requires_grad:  # a frozen layer stays frozen in its factorized form
        factored.requires_grad_(False)
    set_submodule(model, name, factored)


def svd_decompose(
    model: nn.Module,
    reduction: float,
    *,
    include_linear: bool = False,
    layers: Iterable[str] | None = None,
    ranks: Mapping[str, int] | None = None,
) -> nn.Module:
    """Return a copy of ``model`` with convs (and optionally linears) replaced by truncated-SVD pairs.

    Conv: :class:`SVDConv2d` with r = max(1, ⌊(1 − s)·min(c_out/g, (c_in/g)·kh·kw)⌋) per group; linear:
    :class:`LowRankLinear` with r = max(1, ⌊(1 − s)·min(in, out)⌋) (docs/sfw.md#evaluation-protocol). A
    :class:`FactorizationCostWarning` is emitted for every layer the rank makes more expensive than dense.
    Layers are chosen by the rule of :mod:`slimtrain.layers.replacement` (docs/export.md, "Which layers are
    replaced"): by default, convolutions (and linears) it does not allow are left dense and named in one
    :class:`~slimtrain.layers.replacement.LayersLeftDenseWarning`.

    Args:
        model: The trained model (not modified).
        reduction: Fraction s ∈ [0, 1] of the rank removed in every layer (the SFW "rank fraction").
        include_linear: Also factorize ``nn.Linear`` layers (``decomp_type='linear'`` in the reference).
        layers: Names of the layers to factorize instead of every ``nn.Conv2d`` (and linear).
        ranks: Per-layer ranks overriding the uniform rule (per group for grouped convs).

    Returns:
        The decomposed copy.

    Raises:
        UnsupportedModelError: A layer named in ``layers`` that the rule refuses, a model with nothing to
            factorize, or a selected layer that shares a parameter with another module (factorizing it would
            untie them); the message names the module paths, types and why.
        UnknownNameError: A name in ``layers`` or ``ranks`` that is not a selected layer (all named, with
            some valid ones; a ``BadInputError`` and ``KeyError``).
    """
    refuse_unmaterialized(model, "svd_decompose")
    operator = _operator("SVD factorization", include_linear or layers is not None)
    result = copy_model(model, "svd_decompose")
    ranks = dict(ranks or {})
    names = select_replaceable(result, operator, layers)
    refuse_shared(result, names, "SVD factorization")
    _refuse_unknown_ranks(ranks, names)
    for name in names:
        dense = get_submodule(result, name)
        if isinstance(dense, nn.Conv2d):
            g = dense.groups
            kh, kw = dense.kernel_size
            full = min(dense.out_channels // g, dense.in_channels // g * kh * kw)
            rank = ranks.get(name, kept_rank(full, reduction))
            factored: nn.Module = SVDConv2d.from_conv(dense, rank)
            per_position_dense = dense.weight.numel()
            per_position_factored = factored.reduce.weight.numel() + factored.expand.weight.numel()
            _warn_if_costlier(
                name, per_position_dense, per_position_factored, per_position_dense, per_position_factored
            )
        else:
            rank = ranks.get(name, kept_rank(min(dense.in_features, dense.out_features), reduction))
            factored = LowRankLinear.from_linear(dense, rank)
            _warn_if_costlier(
                name,
                dense.weight.numel(),
                rank * (dense.in_features + dense.out_features),
                dense.weight.numel(),
                rank * (dense.in_features + dense.out_features),
            )
        _replace(result, name, dense, factored)
    return result


def tucker_decompose(
    model: nn.Module,
    reduction: float,
    *,
    layers: Iterable[str] | None = None,
    ranks: Mapping[str, tuple[int, int]] | None = None,
) -> nn.Module:
    """Return a copy of ``model`` with every conv replaced by a Tucker-2 :class:`TuckerConv2d` (HOSVD).

    Ranks: r_out = max(1, ⌊(1 − s)·c_out⌋), r_in = max(1, ⌊(1 − s)·c_in⌋), spatial modes full. Costs follow
    docs/metrics.md#macs (the 1×1 projection runs at input resolution, i.e. stride² positions per output
    position); a :class:`FactorizationCostWarning` flags layers made more expensive than dense. Convolutions
    are chosen as by :func:`svd_decompose`; grouped ones have no Tucker-2 form here and are left dense (and
    named in the :class:`~slimtrain.layers.replacement.LayersLeftDenseWarning`).

    Args:
        model: The trained model (not modified).
        reduction: Fraction s ∈ [0, 1] of each channel mode's rank removed.
        layers: Names of the convs to factorize instead of every ``nn.Conv2d``.
        ranks: Per-layer ``(r_out, r_in)`` overriding the uniform rule.

    Returns:
        The decomposed copy.

    Raises:
        UnsupportedModelError: A conv named in ``layers`` that the rule refuses (``groups > 1`` included), a
            model with nothing to factorize, or a selected conv that shares a parameter with another module.
        UnknownNameError: A name in ``layers`` or ``ranks`` that is not a selected layer (all named, with
            some valid ones; a ``BadInputError`` and ``KeyError``).
    """
    refuse_unmaterialized(model, "tucker_decompose")
    result = copy_model(model, "tucker_decompose")
    ranks = dict(ranks or {})
    names = select_replaceable(result, _operator("Tucker factorization", False, _tucker_refusal), layers)
    refuse_shared(result, names, "Tucker factorization")
    _refuse_unknown_ranks(ranks, names)
    for name in names:
        dense = get_submodule(result, name)
        r_out, r_in = ranks.get(
            name, (kept_rank(dense.out_channels, reduction), kept_rank(dense.in_channels, reduction))
        )
        factored = TuckerConv2d.from_conv(dense, r_out, r_in)
        kh, kw = dense.kernel_size
        stride_area = dense.stride[0] * dense.stride[1]
        core = r_out * r_in * kh * kw
        _warn_if_costlier(
            name,
            dense.weight.numel(),
            dense.in_channels * r_in + core + r_out * dense.out_channels,
            dense.weight.numel(),
            dense.in_channels * r_in * stride_area + core + r_out * dense.out_channels,
        )
        _replace(result, name, dense, factored)
    return result

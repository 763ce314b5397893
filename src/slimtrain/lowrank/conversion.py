"""Replace the Conv2d / Linear layers of any model by factorized layers (spec ``tdlrt.md`` §2.6, §3)."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from typing import Literal

from torch import nn

from slimtrain.layers.factor_base import TuckerFactorizedLayer
from slimtrain.layers.matrix_factorized import MatrixFactorizedConv2d, MatrixFactorizedLinear
from slimtrain.layers.tucker_factorized import TuckerFactorizedConv2d


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def convert_to_lowrank(
    model: nn.Module,
    *,
    conv: Literal["tucker", "matrix"] | None = "tucker",
    linear: Literal["matrix"] | None = "matrix",
    skip: Iterable[str] = (),
    keep_first_conv_dense: bool = True,
    keep_last_linear_dense: bool = True,
    init: Literal["random", "from_weights"] = "random",
    ranks: int | Sequence[int] | None = None,
    rank_fraction: float | None = None,
    tau: float | None = None,
    max_rank: int | None = None,
    max_rank_fraction: float = 0.5,
    tucker_min_rank: int = 3,
    matrix_min_rank: int = 2,
    adaptive_modes: Sequence[int] = (0, 1),
    free_factors: bool = False,
) -> dict[str, TuckerFactorizedLayer]:
    """Replace, in place, ``nn.Conv2d`` and ``nn.Linear`` layers of ``model`` by factorized layers.

    The first convolution and the last linear layer (in module registration order) stay dense by default,
    as in the RobustDLRT experiments (spec §3). New layers are created on the replaced layer's device and
    dtype.

    Args:
        model: Any module; modified in place.
        conv: ``"tucker"`` (:class:`~slimtrain.layers.TuckerFactorizedConv2d`), ``"matrix"``
            (:class:`~slimtrain.layers.MatrixFactorizedConv2d`) or ``None`` (convolutions stay dense).
        linear: ``"matrix"`` (:class:`MatrixFactorizedLinear`) or ``None``.
        skip: Module names (as in ``named_modules``) to keep dense.
        keep_first_conv_dense: Keep the first ``nn.Conv2d`` dense.
        keep_last_linear_dense: Keep the last ``nn.Linear`` dense.
        init: ``"random"``: a fresh default-initialized kernel factorized by truncated HOSVD/SVD (training
            from scratch, spec §2.6); ``"from_weights"``: factorize the layer's current weights (a trained
            layer computes the same function up to the truncation, exactly at full rank) and keep its bias.
        ranks: Initial rank(s) of every converted layer (default ``r_max``).
        rank_fraction: Initial ranks as a fraction of the mode sizes.
        tau: Initial ranks by truncated HOSVD/SVD with relative tolerance ``tau`` (overrides ``ranks``).
        max_rank: User cap ``r_max_user``.
        max_rank_fraction: ``r_max,i = min(⌊fraction · n_i⌋, max_rank)``; 1.0 allows full rank.
        tucker_min_rank: ``r_min`` of Tucker convolutions (authors: 3).
        matrix_min_rank: ``r_min`` of matrix layers, linear and ``conv="matrix"`` (authors: 2).
        adaptive_modes: Adaptive modes of Tucker convolutions (default: channel modes).
        free_factors: Build vanilla fixed-rank factorizations (baseline; plain trainable factors).

    Returns:
        The new layers by module name.

    Raises:
        ValueError: Unknown option, a name in ``skip`` that is not a module, or a layer that cannot be
            factorized (e.g. a grouped convolution); the message names the layer.
    """
    if conv not in ("tucker", "matrix", None):
        raise ValueError(f"conv must be 'tucker', 'matrix' or None, got {conv!r}")
    if linear not in ("matrix", None):
        raise ValueError(f"linear must be 'matrix' or None, got {linear!r}")
    if init not in ("random", "from_weights"):
        raise ValueError(f"init must be 'random' or 'from_weights', got {init!r}")
    if isinstance(model, (nn.Conv2d, nn.Linear)):
        raise ValueError("convert_to_lowrank: the model itself is a Conv2d/Linear; wrap it in a container")
    modules = dict(model.named_modules())
    skipped = set(skip)
    unknown = skipped - modules.keys()
    if unknown:
        raise ValueError(f"skip names modules that do not exist: {sorted(unknown)}")
    convs = [n for n, m in modules.items() if isinstance(m, nn.Conv2d)]
    linears = [n for n, m in modules.items() if isinstance(m, nn.Linear)]
    if keep_first_conv_dense and convs:
        skipped.add(convs[0])
    if keep_last_linear_dense and linears:
        skipped.add(linears[-1])
    common = {"max_rank": max_rank, "max_rank_fraction": max_rank_fraction, "free_factors": free_factors}
    rank_args = {"ranks": ranks, "rank_fraction": rank_fraction, "tau": tau}

    replaced: dict[str, TuckerFactorizedLayer] = {}
    for name in [*convs, *linears]:
        if name in skipped:
            continue
        dense = modules[name]
        if isinstance(dense, nn.Conv2d):
            if conv is None:
                continue
            if dense.groups != 1:
                raise ValueError(
                    f"layer {name!r}: grouped convolutions (groups={dense.groups}) cannot be "
                    "factorized; add it to skip"
                )
            if conv == "tucker":
                kwargs = {**common, "min_rank": tucker_min_rank, "adaptive_modes": adaptive_modes}
                cls = TuckerFactorizedConv2d
            else:
                kwargs = {**common, "min_rank": matrix_min_rank}
                cls = MatrixFactorizedConv2d
            if init == "random":
                dense = _fresh_copy(dense)
            try:
                new = cls.from_conv(dense, name=name, **rank_args, **kwargs)
            except ValueError as error:
                raise ValueError(f"layer {name!r}: {error}") from error
        else:
            if linear is None:
                continue
            if init == "random":
                dense = _fresh_copy(dense)
            try:
                new = MatrixFactorizedLinear.from_linear(
                    dense, **rank_args, **common, min_rank=matrix_min_rank
                )
            except ValueError as error:
                raise ValueError(f"layer {name!r}: {error}") from error
        _set_submodule(model, name, new)
        replaced[name] = new
    return replaced


def _fresh_copy(layer: nn.Conv2d | nn.Linear) -> nn.Conv2d | nn.Linear:
    """A layer of the same configuration with torch's default initialization (weights and bias)."""
    fresh = copy.deepcopy(layer)
    fresh.reset_parameters()
    return fresh


def factorized_layers(model: nn.Module) -> dict[str, TuckerFactorizedLayer]:
    """All factorized layers of ``model`` by module name (registration order)."""
    return {n: m for n, m in model.named_modules() if isinstance(m, TuckerFactorizedLayer)}


def to_dense_model(model: nn.Module, *, inplace: bool = True) -> nn.Module:
    """Replace every factorized layer by its dense equivalent (the reconstructed weights).

    Args:
        model: Any module.
        inplace: Modify ``model`` itself and return it (the default); ``False``: return a densified deep copy
            and leave ``model`` untouched.

    Returns:
        The model with dense layers in place of the factorized ones.
    """
    if not inplace:
        model = copy.deepcopy(model)
    for name, layer in factorized_layers(model).items():
        _set_submodule(model, name, layer.to_dense())
    return model

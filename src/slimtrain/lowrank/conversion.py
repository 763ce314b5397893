"""Replace the Conv2d / Linear layers of any model by factorized layers.

The layers are those of Zangrando et al. (arXiv:2305.19059, Tucker convolutions) and Schotthöfer et al.
(arXiv:2205.13571, ``U S Vᵀ`` matrices); the options live in one frozen :class:`ConversionConfig`. See
``docs/tdlrt.md`` ("Conversion").
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

import torch
from torch import nn

from slimtrain._config import is_int, is_real, with_options
from slimtrain._materialized import refuse_unmaterialized
from slimtrain._shared_params import refuse_shared
from slimtrain._wrappers import refuse_data_parallel
from slimtrain.layers.factor_base import RankConfig, TuckerFactorizedLayer
from slimtrain.layers.factorized import FACTORIZED_DEPLOYMENT_LAYERS
from slimtrain.layers.matrix_factorized import MatrixFactorizedConv2d, MatrixFactorizedLinear
from slimtrain.layers.replacement import CONVOLUTIONS, LINEARS, Family, Replacement, select_replaceable
from slimtrain.layers.tucker_factorized import TuckerFactorizedConv2d, conv_refusal

__all__ = ["ConversionConfig", "convert_to_lowrank", "factorized_layers", "to_dense_model"]

#: The :class:`RankConfig` fields :func:`convert_to_lowrank` also takes as keywords (``min_rank`` is per kind
#: of layer there: ``tucker_min_rank`` and ``matrix_min_rank``).
_RANK_KEYWORDS = tuple(f.name for f in fields(RankConfig) if f.name != "min_rank")


@dataclass(frozen=True)
class ConversionConfig:
    """Every option of :func:`convert_to_lowrank`, validated when the object is made.

    The rank options of the new layers are one :class:`~slimtrain.layers.RankConfig` (``rank``), the one
    the layers themselves take, except for ``r_min``, which has one field per kind of layer
    (``tucker_min_rank``, ``matrix_min_rank``) since their defaults differ; :meth:`rank_config_for` gives
    the config of each kind.

    Attributes:
        conv: ``"tucker"`` (:class:`~slimtrain.layers.TuckerFactorizedConv2d`), ``"matrix"``
            (:class:`~slimtrain.layers.MatrixFactorizedConv2d`) or ``None`` (convolutions stay dense).
        linear: ``"matrix"`` (:class:`~slimtrain.layers.MatrixFactorizedLinear`) or ``None``.
        skip: Module names (as in ``named_modules``) to keep dense; stored as a tuple.
        keep_first_conv_dense: Keep the first ``nn.Conv2d`` (in module registration order) dense.
        keep_last_linear_dense: Keep the last ``nn.Linear`` dense.
        init: ``"random"``: a fresh default-initialized kernel factorized by truncated HOSVD/SVD (training
            from scratch); ``"from_weights"``: factorize the layer's current weights (a trained layer
            computes the same function up to the truncation, exactly at full rank) and keep its bias.
        tau: Initial ranks by truncated HOSVD/SVD with relative tolerance ``tau`` ≥ 0 (overrides
            ``rank.ranks`` and ``rank.rank_fraction``); ``None``: by ``rank``.
        rank: The rank options of every new layer (:class:`~slimtrain.layers.RankConfig`: initial
            ``ranks`` (default ``r_max``) or ``rank_fraction``, ``max_rank``, ``max_rank_fraction``
            (default 0.5; 1.0 allows full rank), ``adaptive_modes`` (Tucker convolutions only; matrix layers
            adapt both modes), ``free_factors`` (vanilla fixed-rank baseline)); its ``min_rank`` must stay
            ``None``. A mapping of its fields (as ``dataclasses.asdict`` gives) is turned into one.
        tucker_min_rank: ``r_min`` ≥ 1 of Tucker convolutions (authors: 3).
        matrix_min_rank: ``r_min`` ≥ 1 of matrix layers, linear and ``conv="matrix"`` (authors: 2).

    Raises:
        ValueError: A field has a wrong value; the message names the field.
        TypeError: ``rank`` is a mapping with a key that is not a field of ``RankConfig`` (named).
    """

    conv: Literal["tucker", "matrix"] | None = "tucker"
    linear: Literal["matrix"] | None = "matrix"
    skip: tuple[str, ...] = ()
    keep_first_conv_dense: bool = True
    keep_last_linear_dense: bool = True
    init: Literal["random", "from_weights"] = "random"
    tau: float | None = None
    rank: RankConfig = field(default_factory=RankConfig)
    tucker_min_rank: int = 3
    matrix_min_rank: int = 2

    def __post_init__(self) -> None:
        def bad(field: str, why: str) -> ValueError:
            return ValueError(f"ConversionConfig.{field}={getattr(self, field)!r}: {why}")

        if self.conv not in ("tucker", "matrix", None):
            raise bad("conv", "use 'tucker', 'matrix' or None")
        if self.linear not in ("matrix", None):
            raise bad("linear", "use 'matrix' or None")
        try:
            skip = None if isinstance(self.skip, str) else tuple(self.skip)
        except TypeError:
            skip = None
        if skip is None or not all(isinstance(name, str) for name in skip):
            raise bad("skip", "must be a collection of module names, such as ('features.0',)")
        object.__setattr__(self, "skip", skip)
        for name in ("keep_first_conv_dense", "keep_last_linear_dense"):
            if not isinstance(getattr(self, name), bool):
                raise bad(name, "must be a bool")
        if self.init not in ("random", "from_weights"):
            raise bad("init", "use 'random' or 'from_weights'")
        if self.tau is not None and not (is_real(self.tau) and 0 <= self.tau < math.inf):
            raise bad("tau", "must be None or non-negative and finite")
        if isinstance(self.rank, Mapping):
            object.__setattr__(self, "rank", with_options(RankConfig, None, dict(self.rank), "RankConfig"))
        if not isinstance(self.rank, RankConfig):
            raise bad("rank", "must be a RankConfig or a mapping of its fields")
        if self.rank.min_rank is not None:
            raise bad("rank", "min_rank must be None here; set tucker_min_rank and matrix_min_rank instead")
        for name in ("tucker_min_rank", "matrix_min_rank"):
            value = getattr(self, name)
            if not (is_int(value) and value >= 1):
                raise bad(name, "must be an integer ≥ 1")

    def rank_config_for(self, kind: Literal["tucker", "matrix"]) -> RankConfig:
        """The :class:`~slimtrain.layers.RankConfig` of one kind of new layer: ``rank`` with its ``r_min``.

        Matrix layers (linear, and convolutions with ``conv="matrix"``) adapt both modes, so their
        ``adaptive_modes`` is ``(0, 1)`` whatever ``rank.adaptive_modes`` says.
        """
        if kind == "tucker":
            return replace(self.rank, min_rank=self.tucker_min_rank)
        if kind == "matrix":
            return replace(self.rank, min_rank=self.matrix_min_rank, adaptive_modes=(0, 1))
        raise ValueError(f"kind must be 'tucker' or 'matrix', got {kind!r}")


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def _with_conversion_options(config: ConversionConfig | None, options: dict[str, Any]) -> ConversionConfig:
    """``config`` with ``options`` on top; the fields of ``config.rank`` may be given as keywords too."""
    if config is not None and not isinstance(config, ConversionConfig):
        raise TypeError(
            f"convert_to_lowrank() config must be a ConversionConfig, got {type(config).__name__}"
        )
    own = [f.name for f in fields(ConversionConfig)]
    unknown = ", ".join(repr(name) for name in options if name not in own and name not in _RANK_KEYWORDS)
    if unknown:
        raise TypeError(
            f"convert_to_lowrank() got unknown option(s) {unknown}; the options are the fields of "
            f"ConversionConfig: {', '.join(own)}, and of its RankConfig: {', '.join(_RANK_KEYWORDS)}"
        )
    rank_options = {name: value for name, value in options.items() if name in _RANK_KEYWORDS}
    rest = {name: value for name, value in options.items() if name not in _RANK_KEYWORDS}
    if rank_options:
        if "rank" in rest:
            raise TypeError(
                f"convert_to_lowrank() got rank= and the RankConfig field(s) "
                f"{', '.join(map(repr, rank_options))} as keywords; give one or the other"
            )
        base = config.rank if config is not None else None
        rest["rank"] = with_options(RankConfig, base, rank_options, "convert_to_lowrank")
    return with_options(ConversionConfig, config, rest, "convert_to_lowrank")


def convert_to_lowrank(
    model: nn.Module, config: ConversionConfig | None = None, **options: Any
) -> dict[str, TuckerFactorizedLayer]:
    """Replace, in place, ``nn.Conv2d`` and ``nn.Linear`` layers of ``model`` by factorized layers.

    The first convolution and the last linear layer (in module registration order) stay dense by default,
    as in the RobustDLRT experiments. The other layers are chosen by the rule of
    :mod:`slimtrain.layers.replacement` (docs/tdlrt.md, "Conversion"): a convolution or linear it does not
    allow (a subclass with its own ``forward``, a grouped convolution, the ``out_proj`` of an
    ``nn.MultiheadAttention``, a parametrized weight, a ``Conv1d``...) is left dense and named in one
    :class:`~slimtrain.layers.replacement.LayersLeftDenseWarning`, unless ``skip`` names it. New layers
    are created on the replaced layer's device and dtype; a half-precision layer is factorized in float32
    and its factors are stored in its dtype, as :func:`slimtrain.compress.svd_decompose` does.
    ``convert_to_lowrank(model, ConversionConfig(conv="matrix", rank=RankConfig(rank_fraction=0.3)))`` and
    ``convert_to_lowrank(model, conv="matrix", rank_fraction=0.3)`` are the same call: the options are the
    fields of :class:`ConversionConfig` and, as keywords, those of its ``rank`` (all but ``min_rank``).

    Args:
        model: Any module; modified in place.
        config: The options (:class:`ConversionConfig`); ``None`` for the defaults.
        **options: Fields of :class:`ConversionConfig` (``conv``, ``linear``, ``skip``,
            ``keep_first_conv_dense``, ``keep_last_linear_dense``, ``init``, ``tau``, ``rank``,
            ``tucker_min_rank``, ``matrix_min_rank``) and of :class:`~slimtrain.layers.RankConfig`
            (``ranks``, ``rank_fraction``, ``adaptive_modes``, ``max_rank``, ``max_rank_fraction``,
            ``free_factors``: they replace those of ``config.rank``) that replace those of ``config``.

    Returns:
        The new layers by module name.

    Raises:
        TypeError: An option that is not a field of either config (named, with the valid ones).
        ValueError: An invalid option (naming the field), or a name in ``skip`` that is not a module.
        UnsupportedModelError: Nothing to convert (the message names every convolution and linear and why it
            stays dense), or a layer to convert shares a parameter with another module (converting it would
            untie them; the message names both module paths), or a ``DistributedDataParallel`` model
            (convert ``model.module`` before wrapping it). Nothing is converted then.
    """
    refuse_data_parallel(model, "convert_to_lowrank")
    refuse_unmaterialized(model, "convert_to_lowrank")
    cfg = _with_conversion_options(config, options)
    modules = dict(model.named_modules())
    unknown = set(cfg.skip) - modules.keys()
    if unknown:
        raise ValueError(f"skip names modules that do not exist: {sorted(unknown)}")
    convs = [n for n, m in modules.items() if isinstance(m, nn.Conv2d)]
    linears = [n for n, m in modules.items() if isinstance(m, nn.Linear)]
    excluded = dict.fromkeys(cfg.skip, "named in skip=")
    if cfg.keep_first_conv_dense and convs:
        excluded.setdefault(convs[0], "the first convolution (keep_first_conv_dense=True)")
    if cfg.keep_last_linear_dense and linears:
        excluded.setdefault(linears[-1], "the last linear (keep_last_linear_dense=True)")
    names = select_replaceable(model, _operator(cfg), excluded=excluded)
    refuse_shared(model, names, "conversion")
    conv_class = TuckerFactorizedConv2d if cfg.conv == "tucker" else MatrixFactorizedConv2d
    conv_ranks = cfg.rank_config_for("tucker" if cfg.conv == "tucker" else "matrix")
    matrix_ranks = cfg.rank_config_for("matrix")
    replaced: dict[str, TuckerFactorizedLayer] = {}
    for name in sorted(names, key=lambda n: not isinstance(modules[n], nn.Conv2d)):  # convs first
        dense = modules[name]
        if cfg.init == "random":
            dense = _fresh_copy(dense)
        dtype = dense.weight.dtype
        if dtype in _HALF:  # no QR/SVD kernels in half precision: factorize in float32, store in its dtype
            dense = copy.deepcopy(dense).float()
        try:
            if isinstance(dense, nn.Conv2d):
                new = conv_class.from_conv(dense, conv_ranks, tau=cfg.tau, name=name)
            else:
                new = MatrixFactorizedLinear.from_linear(dense, matrix_ranks, tau=cfg.tau)
        except ValueError as error:
            raise ValueError(f"layer {name!r}: {error}") from error
        new.to(dtype)
        _set_submodule(model, name, new)
        replaced[name] = new
    return replaced


_HALF = (torch.float16, torch.bfloat16)


def _operator(cfg: ConversionConfig) -> Replacement:
    """The :class:`Replacement` of a conversion: the convolutions and/or linears ``cfg`` converts."""
    types: tuple[type[nn.Module], ...] = ()
    family: Family = ()
    words = []
    if cfg.conv is not None:
        types, family = (nn.Conv2d,), CONVOLUTIONS
        words.append("convolution")
    if cfg.linear is not None:
        types, family = (*types, nn.Linear), (*family, *LINEARS)
        words.append("linear")
    name = " or ".join(words) or "layer to convert (conv=None and linear=None convert nothing)"
    return Replacement(
        "low-rank conversion",
        types,
        family,
        name,
        _training_refusal,
        inside=FACTORIZED_DEPLOYMENT_LAYERS,
    )


def _training_refusal(layer: nn.Module) -> str | None:
    """Why a convertible layer stays dense for training: a frozen weight, or a convolution the layers lack."""
    if not layer.weight.requires_grad:
        # Its factors would be trained: a frozen layer is left as it is, and named in the warning.
        return "its weight is frozen (requires_grad=False)"
    return conv_refusal(layer) if isinstance(layer, nn.Conv2d) else None


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

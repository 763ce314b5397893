"""Common base of the factorized layers: a weight tensor stored as ``core ×_i U_i`` (Tucker format).

A matrix factorization ``W = U S Vᵀ`` is the two-mode case (``core = S``, factors ``U, V``), so one
rank-adaptive integrator drives Tucker convolutions and low-rank matrices alike: the two-pass step of
Zangrando et al. (arXiv:2305.19059) applies to the matrices of Schotthöfer et al. (arXiv:2205.13571) because
one ordinary backward pass gives every basis gradient (see ``docs/tdlrt.md``, "The integrator").
The rank options of the three training layers are one frozen :class:`RankConfig`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from slimtrain._config import is_int, is_real, with_options
from slimtrain.algebra.tucker import hosvd, rank_from_singular_values, tucker_to_tensor, unfold
from slimtrain.layers.counts import (
    dlrt_train_parameter_count,
    svd_parameter_count,
    tucker_augmented_ranks,
    tucker_parameter_count,
    tucker_train_parameter_count,
)


@dataclass(frozen=True)
class RankConfig:
    """The rank options of the training layers, shared by all three, validated when the object is made.

    :class:`~slimtrain.layers.TuckerFactorizedConv2d`, :class:`~slimtrain.layers.MatrixFactorizedLinear` and
    :class:`~slimtrain.layers.MatrixFactorizedConv2d` take it as ``config=`` (with its fields as keywords on
    top), and so do their ``from_conv`` / ``from_linear`` constructors;
    :class:`slimtrain.lowrank.ConversionConfig` holds one for every layer it creates. Rank bounds follow
    the authors' code (see ``docs/tdlrt.md``, "Layers"): for the adaptive modes
    ``r_max,i = min(⌊max_rank_fraction · n_i⌋, max_rank)``, and ranks stay in ``[r_min, r_max,i]``.

    Attributes:
        ranks: Initial ranks: one int (a Tucker convolution gives it to its channel modes, whose other
            adaptive modes start at ``r_max,i``; a matrix layer to both modes) or one per mode; ``None``:
            ``rank_fraction``, else ``r_max``. Non-adaptive modes always keep full size, and a rank above
            ``r_max,i`` raises when the layer is built.
        rank_fraction: Initial ranks as a fraction in ``(0, 1]`` of each adaptive mode size (of
            ``min(n, m)`` for a matrix layer); ignored when ``ranks`` is given.
        adaptive_modes: The modes whose basis is augmented and truncated; the others keep full size with a
            fixed orthonormal factor. Tucker convolutions (modes 0 = ``C_out``, 1 = ``C_in``, 2 = ``k_h``,
            3 = ``k_w``): ``(0, 1)``, the channel modes (default), or ``(0, 1, 2, 3)``. A matrix layer
            always adapts both of its modes: only ``(0, 1)`` applies to it. Stored sorted, without
            repeats.
        max_rank: User cap ``r_max_user`` ≥ 1 on the adaptive ranks; ``None``: no cap.
        max_rank_fraction: ``r_max,i = ⌊fraction · n_i⌋``, fraction in ``(0, 1]`` (authors' code: 0.5; 1.0
            allows full rank). Tucker convolutions apply it to the channel modes only (an adaptive spatial
            mode is capped at the kernel size: the authors' ``⌊3/2⌋ = 1`` for a 3×3 kernel is a bug of their
            code); matrix layers to ``min(n, m)``, one ``r_max`` for both modes.
        min_rank: Lower rank bound ``r_min`` ≥ 1 of the adaptive modes (capped at ``r_max,i``); ``None``:
            the layer's default, 3 for Tucker convolutions and 2 for matrix layers (authors' code).
        free_factors: Vanilla fixed-rank factor training (a baseline of low-rank training): every factor
            is a plain trainable parameter meant for a standard optimizer, with no orthonormality; the
            rank-adaptive integrator refuses such layers.

    Raises:
        ValueError: A field has a wrong value; the message names the field.
    """

    ranks: int | tuple[int, ...] | None = None
    rank_fraction: float | None = None
    adaptive_modes: tuple[int, ...] = (0, 1)
    max_rank: int | None = None
    max_rank_fraction: float = 0.5
    min_rank: int | None = None
    free_factors: bool = False

    def __post_init__(self) -> None:
        def bad(field: str, why: str) -> ValueError:
            return ValueError(f"RankConfig.{field}={getattr(self, field)!r}: {why}")

        def int_sequence(value: Any, low: int) -> tuple[int, ...] | None:
            if isinstance(value, Sequence) and not isinstance(value, str):
                if all(is_int(v) and v >= low for v in value):
                    return tuple(int(v) for v in value)
            return None

        if self.ranks is not None:
            if is_int(self.ranks) and self.ranks >= 1:
                object.__setattr__(self, "ranks", int(self.ranks))
            elif ranks := int_sequence(self.ranks, 1):  # a non-empty sequence
                object.__setattr__(self, "ranks", ranks)
            else:
                raise bad("ranks", "must be None, an integer ≥ 1 or a sequence of integers ≥ 1, one per mode")
        fraction = self.rank_fraction
        if fraction is not None and not (is_real(fraction) and 0 < fraction <= 1):
            raise bad("rank_fraction", "must be None or a fraction in (0, 1]")
        modes = int_sequence(self.adaptive_modes, 0)
        if modes is None:
            raise bad("adaptive_modes", "must be a sequence of mode indices ≥ 0, e.g. (0, 1) or (0, 1, 2, 3)")
        object.__setattr__(self, "adaptive_modes", tuple(sorted(set(modes))))
        if self.max_rank is not None and not (is_int(self.max_rank) and self.max_rank >= 1):
            raise bad("max_rank", "must be None or an integer ≥ 1")
        if not (is_real(self.max_rank_fraction) and 0 < self.max_rank_fraction <= 1):
            raise bad("max_rank_fraction", "must be in (0, 1]")
        if self.min_rank is not None and not (is_int(self.min_rank) and self.min_rank >= 1):
            raise bad("min_rank", "must be None (the layer's default) or an integer ≥ 1")
        if not isinstance(self.free_factors, bool):
            raise bad("free_factors", "must be a bool")


def _as_ranks(ranks: int | Sequence[int] | None, count: int, name: str) -> tuple[int, ...] | None:
    if ranks is None:
        return None
    if isinstance(ranks, int):
        return (ranks,) * count
    ranks = tuple(int(r) for r in ranks)
    if len(ranks) != count:
        raise ValueError(f"{name}: expected {count} ranks, got {ranks}")
    return ranks


class TuckerFactorizedLayer(nn.Module):
    """Base class of layers whose weight is ``core ×_1 U_1 … ×_d U_d`` with orthonormal factors.

    Subclasses define the mode sizes, how the represented tensor maps to the dense weight, and the forward
    pass. Parameters: ``core`` (shape = current ranks), ``factors`` (``U_i`` of shape ``n_i × r_i``) and
    ``bias``. Ranks change during rank-adaptive training by swapping the parameters' data, so parameter
    objects (and the optimizer's references to them) survive a rank change.

    Args:
        mode_sizes: ``(n_1, …, n_d)``.
        adaptive_modes: Modes whose basis is augmented and truncated; the others keep their rank.
        max_rank: User cap on every mode's rank (``r_max_user``; ``docs/tdlrt.md``, "Layers").
        max_rank_fraction: ``r_max,i = min(⌊fraction · n_i⌋, max_rank)`` for adaptive modes in
            ``fraction_modes`` (authors' code: 0.5); other modes are capped at ``min(n_i, max_rank)``
            (non-adaptive modes keep ``n_i``).
        min_rank: Lower rank bound ``r_min`` of adaptive modes (capped at ``r_max,i``).
        free_factors: Vanilla factor training (a baseline of low-rank training): every factor is a plain
            trainable parameter meant for a standard optimizer, with no orthonormality; the rank-adaptive
            integrator refuses such layers.
        fraction_modes: Modes ``max_rank_fraction`` applies to (default: all). Tucker convolutions use the
            channel modes only: ``⌊3/2⌋ = 1`` for a 3×3 spatial mode is a bug of the authors' code.

    Subclasses take their rank options as one :class:`RankConfig` (see :meth:`_rank_config`).
    """

    factors: nn.ParameterList
    core: nn.Parameter
    bias: nn.Parameter | None
    #: ``r_min`` when :attr:`RankConfig.min_rank` is ``None`` (authors' code: 3 for Tucker convolutions).
    default_min_rank: ClassVar[int] = 3

    def __init__(
        self,
        mode_sizes: Sequence[int],
        *,
        adaptive_modes: Sequence[int],
        max_rank: int | None,
        max_rank_fraction: float,
        min_rank: int,
        free_factors: bool,
        fraction_modes: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.mode_sizes = tuple(int(n) for n in mode_sizes)
        order = len(self.mode_sizes)
        adaptive = tuple(sorted({int(m) for m in adaptive_modes}))
        if any(m < 0 or m >= order for m in adaptive):
            raise ValueError(f"{type(self).__name__}: adaptive modes {adaptive} outside 0..{order - 1}")
        if min_rank < 1 or (max_rank is not None and max_rank < 1):
            raise ValueError(f"{type(self).__name__}: min_rank and max_rank must be at least 1")
        if not 0 < max_rank_fraction <= 1:
            raise ValueError(f"{type(self).__name__}: max_rank_fraction must be in (0, 1]")
        self.adaptive_modes = adaptive
        self.free_factors = bool(free_factors)
        self.fraction_modes = tuple(range(order)) if fraction_modes is None else tuple(fraction_modes)
        caps = []
        for mode, n in enumerate(self.mode_sizes):
            halved = mode in adaptive and mode in self.fraction_modes
            cap = max(1, math.floor(max_rank_fraction * n)) if halved else n
            caps.append(min(cap, max_rank) if max_rank is not None and mode in adaptive else cap)
        self.max_ranks: tuple[int, ...] = tuple(caps)
        self.min_ranks: tuple[int, ...] = tuple(
            min(min_rank, cap) if m in adaptive else cap for m, cap in enumerate(caps)
        )

    @classmethod
    def _rank_config(
        cls, config: RankConfig | None, options: dict[str, Any], caller: str | None = None
    ) -> RankConfig:
        """``config`` (or the defaults) with ``options`` on top, ``min_rank`` resolved to the layer's default.

        Raises:
            TypeError: ``config`` is not a :class:`RankConfig`, or an option is not one of its fields.
            ValueError: An invalid option, naming the field.
        """
        cfg = with_options(RankConfig, config, options, caller or cls.__name__)
        return cfg if cfg.min_rank is not None else replace(cfg, min_rank=cls.default_min_rank)

    # ----------------------------------------------------------------------------------------------- ranks
    @property
    def ranks(self) -> tuple[int, ...]:
        """Current multilinear ranks ``(r_1, …, r_d)``."""
        return tuple(self.core.shape)

    def resolve_ranks(
        self,
        ranks: int | Sequence[int] | None = None,
        rank_fraction: float | None = None,
    ) -> tuple[int, ...]:
        """Initial ranks: explicit ``ranks``, or ``rank_fraction · n_i``, else ``r_max,i``.

        An int ``ranks`` applies to the modes in ``fraction_modes``; the others start at ``r_max,i``.
        Non-adaptive modes always keep full size. Raises ``ValueError`` when a requested rank exceeds
        ``r_max,i`` (an initial rank above ``r_max`` would give the authors' code inconsistent shapes).
        """
        if isinstance(ranks, int):  # one rank for the channel-like modes, the others start full
            ranks = tuple(ranks if m in self.fraction_modes else c for m, c in enumerate(self.max_ranks))
        explicit = _as_ranks(ranks, len(self.mode_sizes), type(self).__name__)
        result = []
        for mode, (n, cap) in enumerate(zip(self.mode_sizes, self.max_ranks, strict=True)):
            if mode not in self.adaptive_modes:
                result.append(n)
            elif explicit is not None:
                if not 1 <= explicit[mode] <= cap:
                    raise ValueError(
                        f"{type(self).__name__}: rank {explicit[mode]} of mode {mode} "
                        f"outside [1, r_max={cap}]"
                    )
                result.append(explicit[mode])
            elif rank_fraction is not None:
                result.append(min(cap, max(1, round(rank_fraction * n))))
            else:
                result.append(cap)
        return tuple(result)

    def ranks_for_tolerance(self, tensor: Tensor, tau: float) -> tuple[int, ...]:
        """Per-mode ranks of a truncated HOSVD of ``tensor`` with relative tolerance ``tau``.

        Each adaptive mode keeps the fewest singular values of its unfolding whose discarded tail has norm at
        most ``tau · ‖tensor‖_F``, clamped to ``[r_min, r_max]`` (the integrator's truncation rule,
        ``docs/tdlrt.md``, "The integrator").

        Raises:
            ValueError: ``tau`` is not a non-negative finite number.
        """
        if not (is_real(tau) and 0 <= tau < math.inf):
            raise ValueError(f"{type(self).__name__}: tau={tau!r} must be non-negative and finite")
        threshold = tau * float(torch.linalg.vector_norm(tensor))
        result = []
        for mode in range(len(self.mode_sizes)):
            if mode not in self.adaptive_modes:
                result.append(self.mode_sizes[mode])
                continue
            sigma = torch.linalg.svdvals(unfold(tensor, mode))
            rank = rank_from_singular_values(sigma, threshold)
            result.append(min(max(rank, self.min_ranks[mode]), self.max_ranks[mode]))
        return tuple(result)

    # ------------------------------------------------------------------------------------------ parameters
    def _init_parameters(self, tensor: Tensor, ranks: Sequence[int]) -> None:
        core, factors = hosvd(tensor.detach(), ranks)
        # Contiguous like every later value (`set_factorization`, `_load_from_state_dict`): a transposed
        # SVD factor computes the same products with another summation order, so a run resumed from a
        # checkpoint would drift from the uninterrupted one by rounding.
        self.core = nn.Parameter(core.contiguous())
        self.factors = nn.ParameterList(
            nn.Parameter(u.contiguous(), requires_grad=self.free_factors or m in self.adaptive_modes)
            for m, u in enumerate(factors)
        )

    def set_factorization(self, core: Tensor, factors: Sequence[Tensor]) -> None:
        """Replace core and factors (shapes may change); parameter objects are kept, gradients dropped."""
        if len(factors) != len(self.mode_sizes) or core.dim() != len(self.mode_sizes):
            raise ValueError(f"{type(self).__name__}: expected {len(self.mode_sizes)} modes")
        for mode, (u, n) in enumerate(zip(factors, self.mode_sizes, strict=True)):
            if u.shape != (n, core.shape[mode]):
                raise ValueError(
                    f"{type(self).__name__}: factor {mode} has shape {tuple(u.shape)}, "
                    f"expected ({n}, {core.shape[mode]})"
                )
        with torch.no_grad():
            self.core.data = core.detach().to(self.core).contiguous()
            self.core.grad = None
            for param, u in zip(self.factors, factors, strict=True):
                param.data = u.detach().to(param).contiguous()
                param.grad = None

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing, unexpected, errors):
        # Ranks are shapes: adopt the saved shapes first so a checkpoint taken at other ranks loads.
        core_key = prefix + "core"
        if core_key in state_dict:
            self.core.data = self.core.data.new_empty(state_dict[core_key].shape)
            for mode, param in enumerate(self.factors):
                key = f"{prefix}factors.{mode}"
                if key in state_dict:
                    param.data = param.data.new_empty(state_dict[key].shape)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing, unexpected, errors)

    # ------------------------------------------------------------------------------------ reconstruction
    def represented_tensor(self) -> Tensor:
        """The full tensor ``core ×_i U_i`` of shape ``mode_sizes``."""
        return tucker_to_tensor(self.core, list(self.factors))

    def dense_weight(self) -> Tensor:
        """The weight of the dense layer this layer represents (shape of the replaced layer's weight)."""
        raise NotImplementedError

    @property
    def weight(self) -> Tensor:
        """The dense-equivalent weight, :meth:`dense_weight`: a reconstruction from the factors on each read.

        Not a parameter (the parameters are ``core`` and ``factors``); it exists so that code reading the
        replaced layer's ``weight`` (its dtype, device or values) keeps working. Read-only.
        """
        return self.dense_weight()

    def to_dense(self) -> nn.Module:
        """A dense ``torch.nn`` layer computing the same function (reconstructed weight, same bias)."""
        raise NotImplementedError

    # ---------------------------------------------------------------------------------------- accounting
    def dense_parameter_count(self) -> int:
        """Parameters of the dense layer this layer replaces (weight and bias)."""
        bias = 0 if self.bias is None else self.bias.numel()
        return math.prod(self.mode_sizes) + bias

    def stored_parameter_count(self) -> int:
        """Stored factor count ``Σ_i n_i r_i + ∏_i r_i``, bias excluded (``tucker_parameter_count``)."""
        return tucker_parameter_count(self.mode_sizes, self.ranks)

    def eval_parameter_count(self) -> int:
        """Parameters of the inference model in the eval c.r., bias excluded (docs/tdlrt.md, "Reporting")."""
        return self.stored_parameter_count()

    def augmented_ranks(self, aug_cap: str = "rmax") -> tuple[int, ...]:
        """Widths ``r̂_i = min(2 r_i, r̄_i)`` after augmentation, ``r̄ = r_max`` or ``n`` by ``aug_cap``.

        A mode that does not adapt keeps its rank (docs/tdlrt.md; :func:`~slimtrain.layers.counts.
        tucker_augmented_ranks`).
        """
        caps = [
            (self.max_ranks[mode] if aug_cap == "rmax" else n) if mode in self.adaptive_modes else r
            for mode, (n, r) in enumerate(zip(self.mode_sizes, self.ranks, strict=True))
        ]
        return tucker_augmented_ranks(self.ranks, caps)

    def train_parameter_count_tucker(self, aug_cap: str = "rmax") -> int:
        """Training count of this project: U_i, Ũ_i, C, C̃ and M_i over all modes, at the cap ``aug_cap``.

        :func:`~slimtrain.layers.counts.tucker_train_parameter_count` with :meth:`augmented_ranks`.
        """
        return tucker_train_parameter_count(self.mode_sizes, self.ranks, self.augmented_ranks(aug_cap))

    def extra_repr(self) -> str:
        """Layer hyper-parameters and ranks, as printed by ``repr``."""
        return f"ranks={self.ranks}, adaptive_modes={self.adaptive_modes}, max_ranks={self.max_ranks}"


class MatrixFactorizedLayer(TuckerFactorizedLayer):
    """Two-mode layer ``W = U S Vᵀ`` (matrix DLRT, arXiv:2205.13571): the core is ``S`` (``r_U × r_V``).

    Both modes are adaptive and share ``r_max = min(⌊fraction · n⌋, ⌊fraction · m⌋, max_rank)`` so the
    truncation, which sees the same singular values in both modes, keeps ``r_U = r_V``.
    """

    #: ``r_min`` when :attr:`RankConfig.min_rank` is ``None`` (authors' code: 2 for matrices).
    default_min_rank: ClassVar[int] = 2

    def __init__(
        self,
        rows: int,
        cols: int,
        *,
        max_rank: int | None,
        max_rank_fraction: float,
        min_rank: int,
        free_factors: bool,
    ) -> None:
        common = max(1, math.floor(max_rank_fraction * min(rows, cols)))
        max_rank = common if max_rank is None else min(common, max_rank)
        super().__init__(
            (rows, cols),
            adaptive_modes=(0, 1),
            max_rank=max_rank,
            max_rank_fraction=1.0,
            min_rank=min_rank,
            free_factors=free_factors,
        )

    @classmethod
    def _rank_config(
        cls, config: RankConfig | None, options: dict[str, Any], caller: str | None = None
    ) -> RankConfig:
        """As the base class's; a matrix layer adapts both modes, so ``adaptive_modes`` must be ``(0, 1)``."""
        cfg = super()._rank_config(config, options, caller)
        if cfg.adaptive_modes != (0, 1):
            raise ValueError(
                f"RankConfig.adaptive_modes={cfg.adaptive_modes!r}: {cls.__name__} adapts both of its modes; "
                "only (0, 1) applies"
            )
        return cfg

    def resolve_ranks(
        self,
        ranks: int | Sequence[int] | None = None,
        rank_fraction: float | None = None,
    ) -> tuple[int, ...]:
        """Initial ranks as in the base class; ``rank_fraction`` is relative to ``min(n, m)``."""
        if ranks is None and rank_fraction is not None:
            ranks = min(self.max_ranks[0], max(1, round(rank_fraction * min(self.mode_sizes))))
        return super().resolve_ranks(ranks)

    def eval_parameter_count(self) -> int:
        """DLRT eval count ``(n + m)·r`` at ``r = min(r_U, r_V)``, what ``to_deployment()`` stores.

        :func:`~slimtrain.layers.counts.svd_parameter_count` (docs/tdlrt.md, "Reporting").
        """
        (n, m), r = self.mode_sizes, min(self.ranks)
        return svd_parameter_count(n, m, r)

    def train_parameter_count_dlrt(self) -> int:
        """DLRT-Net training count ``4(n + m) r + 8 r²`` with ``r = max(r_U, r_V)``.

        :func:`~slimtrain.layers.counts.dlrt_train_parameter_count`.
        """
        (n, m), r = self.mode_sizes, max(self.ranks)
        return dlrt_train_parameter_count(n, m, r)


def dense_conv_of(layer: TuckerFactorizedLayer) -> nn.Conv2d:
    """An :class:`torch.nn.Conv2d` computing what a factorized conv layer computes (reconstructed kernel)."""
    weight = layer.dense_weight().detach()
    conv = nn.Conv2d(
        layer.in_channels,
        layer.out_channels,
        layer.kernel_size,
        layer.stride,
        layer.padding,
        layer.dilation,
        bias=layer.bias is not None,
        device=weight.device,
        dtype=weight.dtype,
    )
    with torch.no_grad():
        conv.weight.copy_(weight)
        if layer.bias is not None:
            conv.bias.copy_(layer.bias)
    return conv

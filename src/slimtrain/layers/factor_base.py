"""Common base of the factorized layers: a weight tensor stored as ``core ×_i U_i`` (Tucker format).

A matrix factorization ``W = U S Vᵀ`` is the two-mode case (``core = S``, factors ``U, V``), so one
rank-adaptive integrator drives Tucker convolutions and low-rank matrices alike (spec ``tdlrt.md`` §2.4,
§2.8: the two-pass scheme applies to matrices by the span identity of §2.3).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from slimtrain.algebra.tucker import hosvd, rank_from_singular_values, tucker_to_tensor, unfold
from slimtrain.layers.counts import (
    dlrt_train_parameter_count,
    tucker_augmented_ranks,
    tucker_parameter_count,
    tucker_train_parameter_count,
)


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
        max_rank: User cap on every mode's rank (``r_max_user``; spec §2.6).
        max_rank_fraction: ``r_max,i = min(⌊fraction · n_i⌋, max_rank)`` for adaptive modes in
            ``fraction_modes`` (authors' code: 0.5); other modes are capped at ``min(n_i, max_rank)``
            (non-adaptive modes keep ``n_i``).
        min_rank: Lower rank bound ``r_min`` of adaptive modes (capped at ``r_max,i``).
        free_factors: Vanilla factor training (baseline, spec §4 item 3): every factor is a plain trainable
            parameter meant for a standard optimizer, with no orthonormality; the rank-adaptive integrator
            refuses such layers.
        fraction_modes: Modes ``max_rank_fraction`` applies to (default: all). Tucker convolutions use the
            channel modes only: ``⌊3/2⌋ = 1`` for a 3×3 spatial mode is a bug of the authors' code (spec §5).
    """

    factors: nn.ParameterList
    core: nn.Parameter
    bias: nn.Parameter | None

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
        """Initial ranks: explicit ``ranks``, or ``rank_fraction · n_i``, else ``r_max,i`` (spec §2.6).

        An int ``ranks`` applies to the modes in ``fraction_modes``; the others start at ``r_max,i``.
        Non-adaptive modes always keep full size. Raises ``ValueError`` when a requested rank exceeds
        ``r_max,i`` (spec §5: an initial rank above ``r_max`` gives inconsistent shapes).
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
        """Per-mode ranks of a truncated HOSVD of ``tensor`` with relative tolerance ``tau`` (spec §2.5)."""
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
        """Parameters of the inference model in the eval c.r. (metrics.md §3; bias excluded)."""
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
    """Two-mode layer ``W = U S Vᵀ`` (matrix DLRT, spec §2.8): ``core = S`` (``r_U × r_V``), factors U, V.

    Both modes are adaptive and share ``r_max = min(⌊fraction · n⌋, ⌊fraction · m⌋, max_rank)`` so the
    truncation, which sees the same singular values in both modes, keeps ``r_U = r_V``.
    """

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
        """DLRT eval count: ``K = US`` and ``V`` stored, ``n·r_U + m·r_V`` (metrics.md §3)."""
        (n, m), (ru, rv) = self.mode_sizes, self.ranks
        return n * ru + m * rv

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

"""Tucker-factorized 2-D convolution (TDLRT layer, arXiv:2305.19059; spec ``tdlrt.md`` §2.1)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

from slimtrain.algebra.tucker import mode_product
from slimtrain.layers.factor_base import TuckerFactorizedLayer, dense_conv_of
from slimtrain.layers.factorized import TuckerConv2d
from slimtrain.layers.pointwise import pointwise_conv2d


def check_conv_supported(conv: nn.Conv2d, name: str) -> None:
    """Raise ``ValueError`` naming the layer if a convolution cannot be factorized (groups, padding mode)."""
    if conv.groups != 1:
        raise ValueError(f"layer {name!r}: grouped convolutions (groups={conv.groups}) cannot be factorized")
    if conv.padding_mode != "zeros":
        raise ValueError(
            f"layer {name!r}: padding_mode={conv.padding_mode!r} is not supported (only 'zeros')"
        )


def init_conv_geometry(
    layer: nn.Module,
    in_channels: int,
    out_channels: int,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int],
    padding: int | tuple[int, int] | str,
    dilation: int | tuple[int, int],
    bias: bool,
    device: torch.device | str | None,
    dtype: torch.dtype | None,
) -> Tensor:
    """Give a factorized convolution ``nn.Conv2d``'s hyper-parameters and bias; return a fresh kernel.

    The bias and the returned kernel (to be factorized) have ``nn.Conv2d``'s default initialization.
    """
    layer.in_channels, layer.out_channels = in_channels, out_channels
    layer.kernel_size = _pair(kernel_size)
    layer.stride = _pair(stride)
    layer.padding = padding if isinstance(padding, str) else _pair(padding)
    layer.dilation = _pair(dilation)
    reference = nn.Conv2d(in_channels, out_channels, layer.kernel_size, bias=bias, device=device, dtype=dtype)
    layer.bias = reference.bias
    return reference.weight


def rank_one_like(cls: type[nn.Module], conv: nn.Conv2d, **layer_kwargs) -> nn.Module:
    """A ``cls`` layer with ``conv``'s hyper-parameters, bias flag, device and dtype at rank 1.

    ``from_conv`` constructors build it and then replace its factors by those of ``conv``'s kernel.
    """
    return cls(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        bias=conv.bias is not None,
        ranks=1,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
        **layer_kwargs,
    )


class TuckerFactorizedConv2d(TuckerFactorizedLayer):
    """Conv2d whose kernel ``W ∈ R^{C_out×C_in×k_h×k_w}`` is ``C ×₁U₁ ×₂U₂ ×₃U₃ ×₄U₄`` (orthonormal ``U_i``).

    Forward (spec §2.1): a 1×1 convolution with ``U₂ᵀ`` (``C_in → r₂``, at input resolution), a
    ``k_h×k_w`` convolution with the small kernel ``C ×₃U₃ ×₄U₄`` (``r₂ → r₁``; the layer's stride, padding
    and dilation), and a 1×1 convolution with ``U₁`` (``r₁ → C_out``) plus the bias, applied once (the
    RobustDLRT layer adds it twice, spec §5; there is no faithful flag for that bug). Modes are numbered
    0 = ``C_out``, 1 = ``C_in``, 2 = ``k_h``, 3 = ``k_w``.

    Args:
        in_channels: ``C_in``.
        out_channels: ``C_out``.
        kernel_size: ``k`` or ``(k_h, k_w)``.
        stride: As :class:`torch.nn.Conv2d`.
        padding: As :class:`torch.nn.Conv2d` (int, pair, ``"same"`` or ``"valid"``); zero padding only.
        dilation: As :class:`torch.nn.Conv2d`.
        groups: Must be 1 (grouped convolutions raise ``ValueError``).
        bias: Whether the layer has a bias.
        ranks: Initial ranks (int or one per mode; non-adaptive modes keep full size). Default ``r_max``.
        rank_fraction: Initial rank as a fraction of each adaptive mode size (ignored when ``ranks`` given).
        adaptive_modes: Modes that adapt (default: the channel modes ``(0, 1)``; all modes: ``(0, 1, 2, 3)``).
        max_rank: User cap ``r_max_user`` on adaptive ranks.
        max_rank_fraction: ``r_max,i = min(⌊fraction · n_i⌋, max_rank)`` (authors' code: 0.5).
        min_rank: ``r_min`` (authors' code: 3 for convolutions).
        free_factors: Vanilla fixed-rank Tucker training (baseline): factors are plain trainable parameters.
        device: Device of the parameters.
        dtype: Dtype of the parameters.

    The initial kernel is drawn with :class:`torch.nn.Conv2d`'s default initialization and factorized by
    truncated HOSVD (spec §2.6 design choice); :meth:`from_conv` factorizes a trained layer instead.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | str = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        *,
        ranks: int | Sequence[int] | None = None,
        rank_fraction: float | None = None,
        adaptive_modes: Sequence[int] = (0, 1),
        max_rank: int | None = None,
        max_rank_fraction: float = 0.5,
        min_rank: int = 3,
        free_factors: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        if groups != 1:
            raise ValueError(
                f"TuckerFactorizedConv2d: grouped convolutions (groups={groups}) are not supported"
            )
        k_h, k_w = _pair(kernel_size)
        super().__init__(
            (out_channels, in_channels, k_h, k_w),
            adaptive_modes=adaptive_modes,
            max_rank=max_rank,
            max_rank_fraction=max_rank_fraction,
            min_rank=min_rank,
            free_factors=free_factors,
            fraction_modes=(0, 1),
        )
        kernel = init_conv_geometry(
            self, in_channels, out_channels, (k_h, k_w), stride, padding, dilation, bias, device, dtype
        )
        self._init_parameters(kernel, self.resolve_ranks(ranks, rank_fraction))

    @classmethod
    def from_conv(
        cls,
        conv: nn.Conv2d,
        *,
        ranks: int | Sequence[int] | None = None,
        rank_fraction: float | None = None,
        tau: float | None = None,
        name: str = "conv",
        **layer_kwargs,
    ) -> TuckerFactorizedConv2d:
        """Factorize a trained convolution by truncated HOSVD of its kernel (exact at full ranks).

        Args:
            conv: The dense layer.
            ranks: Explicit ranks (see :meth:`resolve_ranks`).
            rank_fraction: Ranks as a fraction of the mode sizes.
            tau: Choose each adaptive mode's rank by the relative tolerance ``tau`` (spec §2.5) instead.
            name: Layer name used in error messages.
            **layer_kwargs: Further constructor arguments (``adaptive_modes``, ``max_rank``, ...).
        """
        check_conv_supported(conv, name)
        layer = rank_one_like(cls, conv, **layer_kwargs)
        weight = conv.weight.detach()
        if tau is not None:
            chosen = layer.ranks_for_tolerance(weight, tau)
        else:
            chosen = layer.resolve_ranks(ranks, rank_fraction)
        layer._init_parameters(weight, chosen)
        if conv.bias is not None:
            with torch.no_grad():
                layer.bias.copy_(conv.bias)
        return layer

    def dense_weight(self) -> Tensor:
        """The reconstructed kernel ``C ×_i U_i`` (``C_out × C_in × k_h × k_w``)."""
        return self.represented_tensor()

    def to_dense(self) -> nn.Conv2d:
        """An :class:`torch.nn.Conv2d` with the reconstructed kernel and the same bias."""
        return dense_conv_of(self)

    def to_deployment(self) -> TuckerConv2d:
        """The deployment :class:`~slimtrain.layers.TuckerConv2d` computing the same function.

        1×1 → k×k → 1×1 at the trained channel ranks; truncated spatial modes are multiplied back into the
        k×k core, never re-decomposed.
        """
        u_out, u_in, u_h, u_w = (f.detach() for f in self.factors)
        small = mode_product(mode_product(self.core.detach(), u_h, 2), u_w, 3)
        has_bias = self.bias is not None
        out = TuckerConv2d(
            self.in_channels, self.out_channels, self.kernel_size, small.shape[0], small.shape[1],
            stride=self.stride, padding=self.padding, dilation=self.dilation, bias=has_bias,
        ).to(device=small.device, dtype=small.dtype)  # fmt: skip
        with torch.no_grad():
            out.project.weight.copy_(u_in.T[:, :, None, None])
            out.core.weight.copy_(small)
            out.expand.weight.copy_(u_out[:, :, None, None])
            if has_bias:
                out.expand.bias.copy_(self.bias)
        return out

    def forward(self, x: Tensor) -> Tensor:
        """Three-stage Tucker convolution (spec §2.1)."""
        u_out, u_in, u_h, u_w = self.factors
        small = mode_product(mode_product(self.core, u_h, 2), u_w, 3)
        x = pointwise_conv2d(x, u_in.T)
        x = F.conv2d(x, small, None, self.stride, self.padding, self.dilation)
        return pointwise_conv2d(x, u_out, self.bias)

    def extra_repr(self) -> str:
        """Layer hyper-parameters and ranks, as printed by ``repr``."""
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, bias={self.bias is not None}, "
            + super().extra_repr()
        )

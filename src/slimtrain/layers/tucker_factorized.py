"""Tucker-factorized 2-D convolution (TDLRT layer, Zangrando et al., arXiv:2305.19059; ``docs/tdlrt.md``)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

from slimtrain.algebra.tucker import mode_product
from slimtrain.layers.factor_base import RankConfig, TuckerFactorizedLayer, dense_conv_of
from slimtrain.layers.factorized import TuckerConv2d
from slimtrain.layers.pointwise import pointwise_conv2d


def conv_refusal(conv: nn.Conv2d) -> str | None:
    """Why a convolution cannot be factorized by the training layers (groups, padding mode), or ``None``."""
    if conv.groups != 1:
        return f"grouped convolutions (groups={conv.groups}) cannot be factorized"
    if conv.padding_mode != "zeros":
        return f"padding_mode={conv.padding_mode!r} is not supported (only 'zeros')"
    return None


def check_conv_supported(conv: nn.Conv2d, name: str) -> None:
    """Raise ``ValueError`` naming the layer if a convolution cannot be factorized (groups, padding mode)."""
    reason = conv_refusal(conv)
    if reason is not None:
        raise ValueError(f"layer {name!r}: {reason}")


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

    ``groups`` (1) and ``padding_mode`` (``"zeros"``), the only ones supported, are set too, so that code
    reading a conv's attributes (Hugging Face's TF-style padding) reads the layer like the conv it replaced.

    The bias and the returned kernel (to be factorized) have ``nn.Conv2d``'s default initialization.
    """
    layer.in_channels, layer.out_channels = in_channels, out_channels
    layer.kernel_size = _pair(kernel_size)
    layer.stride = _pair(stride)
    layer.padding = padding if isinstance(padding, str) else _pair(padding)
    layer.dilation = _pair(dilation)
    layer.groups, layer.padding_mode = 1, "zeros"
    reference = nn.Conv2d(in_channels, out_channels, layer.kernel_size, bias=bias, device=device, dtype=dtype)
    layer.bias = reference.bias
    return reference.weight


def rank_one_like(cls: type[nn.Module], conv: nn.Conv2d, config: RankConfig) -> nn.Module:
    """A ``cls`` layer with ``conv``'s hyper-parameters, bias flag, device and dtype, ``config`` at rank 1.

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
        config=replace(config, ranks=1),
        device=conv.weight.device,
        dtype=conv.weight.dtype,
    )


class TuckerFactorizedConv2d(TuckerFactorizedLayer):
    """Conv2d whose kernel ``W ∈ R^{C_out×C_in×k_h×k_w}`` is ``C ×₁U₁ ×₂U₂ ×₃U₃ ×₄U₄`` (orthonormal ``U_i``).

    Forward: a 1×1 convolution with ``U₂ᵀ`` (``C_in → r₂``, at input resolution), a
    ``k_h×k_w`` convolution with the small kernel ``C ×₃U₃ ×₄U₄`` (``r₂ → r₁``; the layer's stride, padding
    and dilation), and a 1×1 convolution with ``U₁`` (``r₁ → C_out``) plus the bias, applied once (the
    RobustDLRT layer adds it twice; there is no faithful flag for that bug). Modes are numbered
    0 = ``C_out``, 1 = ``C_in``, 2 = ``k_h``, 3 = ``k_w``.

    The geometry arguments are :class:`torch.nn.Conv2d`'s; the rank options are one :class:`RankConfig`
    (``config``), whose fields may also be given as keywords, which replace those of ``config``:
    ``TuckerFactorizedConv2d(8, 8, 3, config=RankConfig(ranks=2))`` and
    ``TuckerFactorizedConv2d(8, 8, 3, ranks=2)`` build the same layer.

    The initial kernel is drawn with :class:`torch.nn.Conv2d`'s default initialization and factorized by
    truncated HOSVD (this library's choice; the authors' code draws a random core and orthonormalized random
    factors); :meth:`from_conv` factorizes a trained layer instead.

    Args:
        in_channels: ``C_in``.
        out_channels: ``C_out``.
        kernel_size: ``k`` or ``(k_h, k_w)``.
        stride: As :class:`torch.nn.Conv2d`.
        padding: As :class:`torch.nn.Conv2d` (int, pair, ``"same"`` or ``"valid"``); zero padding only.
        dilation: As :class:`torch.nn.Conv2d`.
        groups: Must be 1 (grouped convolutions raise ``ValueError``).
        bias: Whether the layer has a bias.
        config: The rank options (:class:`RankConfig`: ``ranks``, ``rank_fraction``, ``adaptive_modes``,
            ``max_rank``, ``max_rank_fraction``, ``min_rank`` (default 3 here), ``free_factors``); ``None``
            for the defaults.
        device: Device of the parameters.
        dtype: Dtype of the parameters.
        **options: Fields of :class:`RankConfig` that replace those of ``config``.

    Raises:
        TypeError: An option that is not a field of :class:`RankConfig` (named, with the valid ones).
        ValueError: An invalid option (naming the field), grouped convolutions, adaptive modes outside
            0..3, or an initial rank above ``r_max``.
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
        config: RankConfig | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        **options: Any,
    ) -> None:
        if groups != 1:
            raise ValueError(
                f"TuckerFactorizedConv2d: grouped convolutions (groups={groups}) are not supported"
            )
        cfg = type(self)._rank_config(config, options)
        k_h, k_w = _pair(kernel_size)
        super().__init__(
            (out_channels, in_channels, k_h, k_w),
            adaptive_modes=cfg.adaptive_modes,
            max_rank=cfg.max_rank,
            max_rank_fraction=cfg.max_rank_fraction,
            min_rank=cfg.min_rank,
            free_factors=cfg.free_factors,
            fraction_modes=(0, 1),
        )
        kernel = init_conv_geometry(
            self, in_channels, out_channels, (k_h, k_w), stride, padding, dilation, bias, device, dtype
        )
        self._init_parameters(kernel, self.resolve_ranks(cfg.ranks, cfg.rank_fraction))

    @classmethod
    def from_conv(
        cls,
        conv: nn.Conv2d,
        config: RankConfig | None = None,
        *,
        tau: float | None = None,
        name: str = "conv",
        **options: Any,
    ) -> TuckerFactorizedConv2d:
        """Factorize a trained convolution by truncated HOSVD of its kernel (exact at full ranks).

        The layer has ``conv``'s geometry, bias, device and dtype; its ranks are ``config.ranks`` or
        ``config.rank_fraction`` (see :meth:`resolve_ranks`), else ``r_max``, unless ``tau`` is given.

        Args:
            conv: The dense layer.
            config: The rank options (:class:`RankConfig`); ``None`` for the defaults.
            tau: Choose each adaptive mode's rank by the relative tolerance ``tau`` instead (the
                integrator's truncation rule, :meth:`ranks_for_tolerance`).
            name: Layer name used in error messages.
            **options: Fields of :class:`RankConfig` that replace those of ``config``.
        """
        check_conv_supported(conv, name)
        cfg = cls._rank_config(config, options, f"{cls.__name__}.from_conv")
        layer = rank_one_like(cls, conv, cfg)
        weight = conv.weight.detach()
        if tau is not None:
            chosen = layer.ranks_for_tolerance(weight, tau)
        else:
            chosen = layer.resolve_ranks(cfg.ranks, cfg.rank_fraction)
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
        """Three-stage Tucker convolution: 1×1 with ``U₂ᵀ``, k×k with ``C ×₃U₃ ×₄U₄``, 1×1 with ``U₁``."""
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

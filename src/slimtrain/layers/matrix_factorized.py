"""Matrix low-rank layers ``W = U S Vᵀ`` (DLRT, Schotthöfer et al., arXiv:2205.13571; ``docs/tdlrt.md``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

from slimtrain.layers.factor_base import MatrixFactorizedLayer, RankConfig, dense_conv_of
from slimtrain.layers.factorized import LowRankLinear, SVDConv2d
from slimtrain.layers.pointwise import pointwise_conv2d
from slimtrain.layers.tucker_factorized import check_conv_supported, init_conv_geometry, rank_one_like


class MatrixFactorizedLinear(MatrixFactorizedLayer):
    """Linear layer with weight ``W = U S Vᵀ`` (``U``: ``out × r``, ``V``: ``in × r``, orthonormal).

    Forward computes ``((x V) Sᵀ) Uᵀ + b`` without forming ``W``. The geometry arguments are
    :class:`torch.nn.Linear`'s; the rank options are one :class:`RankConfig` (``config``), whose fields may
    also be given as keywords, which replace those of ``config``.

    Args:
        in_features: ``m``.
        out_features: ``n``.
        bias: Whether the layer has a bias.
        config: The rank options (:class:`RankConfig`): ``ranks`` (int or ``(r_U, r_V)``), ``rank_fraction``
            (of ``min(n, m)``), ``max_rank``, ``max_rank_fraction`` (``r_max = ⌊fraction · min(n, m)⌋``,
            DLRT-Net: 0.5), ``min_rank`` (default 2 here), ``free_factors`` (vanilla fixed-rank UV
            training); ``adaptive_modes`` must stay ``(0, 1)``. ``None`` for the defaults.
        device: Device of the parameters.
        dtype: Dtype of the parameters.
        **options: Fields of :class:`RankConfig` that replace those of ``config``.

    Raises:
        TypeError: An option that is not a field of :class:`RankConfig` (named, with the valid ones).
        ValueError: An invalid option (naming the field), or an initial rank above ``r_max``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        config: RankConfig | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        **options: Any,
    ) -> None:
        cfg = type(self)._rank_config(config, options)
        super().__init__(
            out_features,
            in_features,
            max_rank=cfg.max_rank,
            max_rank_fraction=cfg.max_rank_fraction,
            min_rank=cfg.min_rank,
            free_factors=cfg.free_factors,
        )
        self.in_features, self.out_features = in_features, out_features
        reference = nn.Linear(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.bias = reference.bias
        self._init_parameters(reference.weight, self.resolve_ranks(cfg.ranks, cfg.rank_fraction))

    @classmethod
    def from_linear(
        cls,
        linear: nn.Linear,
        config: RankConfig | None = None,
        *,
        tau: float | None = None,
        **options: Any,
    ) -> MatrixFactorizedLinear:
        """Factorize a trained linear layer by truncated SVD (exact at full rank).

        The layer has ``linear``'s sizes, bias, device and dtype; its rank is ``config.ranks`` or
        ``config.rank_fraction`` of ``min(n, m)``, else ``r_max``, unless ``tau`` is given.

        Args:
            linear: The dense layer.
            config: The rank options (:class:`RankConfig`); ``None`` for the defaults.
            tau: Choose the rank by the relative tolerance ``tau`` instead (the integrator's truncation rule).
            **options: Fields of :class:`RankConfig` that replace those of ``config``.
        """
        cfg = cls._rank_config(config, options, f"{cls.__name__}.from_linear")
        layer = cls(
            linear.in_features,
            linear.out_features,
            bias=linear.bias is not None,
            config=replace(cfg, ranks=1),
            device=linear.weight.device,
            dtype=linear.weight.dtype,
        )
        _init_matrix_layer(layer, linear.weight.detach(), linear.bias, cfg.ranks, cfg.rank_fraction, tau)
        return layer

    def dense_weight(self) -> Tensor:
        """The reconstructed weight ``U S Vᵀ`` (``out × in``)."""
        return self.represented_tensor()

    def to_dense(self) -> nn.Linear:
        """An :class:`torch.nn.Linear` with the reconstructed weight and the same bias."""
        weight = self.dense_weight().detach()
        linear = nn.Linear(
            self.in_features,
            self.out_features,
            bias=self.bias is not None,
            device=weight.device,
            dtype=weight.dtype,
        )
        with torch.no_grad():
            linear.weight.copy_(weight)
            if self.bias is not None:
                linear.bias.copy_(self.bias)
        return linear

    def to_deployment(self) -> LowRankLinear:
        """The deployment :class:`~slimtrain.layers.LowRankLinear` at the smaller of the two trained ranks."""
        u, v = (f.detach() for f in self.factors)
        reduce, expand = _smaller_split(u, self.core.detach(), v)
        out = LowRankLinear(self.in_features, self.out_features, reduce.shape[0], bias=self.bias is not None)
        out = out.to(device=u.device, dtype=u.dtype)
        with torch.no_grad():
            out.reduce.weight.copy_(reduce)
            out.expand.weight.copy_(expand)
            if self.bias is not None:
                out.expand.bias.copy_(self.bias)
        return out

    def forward(self, x: Tensor) -> Tensor:
        """``((x V) Sᵀ) Uᵀ + b``."""
        u, v = self.factors
        return F.linear(F.linear(F.linear(x, v.T), self.core), u, self.bias)


class MatrixFactorizedConv2d(MatrixFactorizedLayer):
    """Conv2d with ``mat(W) = U S Vᵀ`` on ``mat(W) ∈ R^{C_out × C_in k_h k_w}`` (matrix-DLRT conv baseline).

    Forward: a ``k_h×k_w`` convolution with kernel ``Vᵀ`` reshaped to ``r_V × C_in × k_h × k_w`` (the layer's
    stride, padding and dilation), then a 1×1 convolution with ``U S`` plus the bias. The geometry arguments
    are :class:`torch.nn.Conv2d`'s; the rank options are one :class:`RankConfig` (``config``), whose fields
    may also be given as keywords, which replace those of ``config``.

    Args:
        in_channels: ``C_in``.
        out_channels: ``C_out``.
        kernel_size: ``k`` or ``(k_h, k_w)``.
        stride: As :class:`torch.nn.Conv2d`.
        padding: As :class:`torch.nn.Conv2d`; zero padding only.
        dilation: As :class:`torch.nn.Conv2d`.
        groups: Must be 1.
        bias: Whether the layer has a bias (``bias=False`` is honoured, unlike DLRT-Net's layer).
        config: The rank options (:class:`RankConfig`): ``ranks``, ``rank_fraction`` (of
            ``min(C_out, C_in k_h k_w)``), ``max_rank``, ``max_rank_fraction``
            (``r_max = ⌊fraction · min(C_out, C_in k_h k_w)⌋``), ``min_rank`` (default 2 here),
            ``free_factors`` (vanilla fixed-rank UV training); ``adaptive_modes`` must stay ``(0, 1)``.
            ``None`` for the defaults.
        device: Device of the parameters.
        dtype: Dtype of the parameters.
        **options: Fields of :class:`RankConfig` that replace those of ``config``.

    Raises:
        TypeError: An option that is not a field of :class:`RankConfig` (named, with the valid ones).
        ValueError: An invalid option (naming the field), grouped convolutions, or an initial rank above
            ``r_max``.
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
                f"MatrixFactorizedConv2d: grouped convolutions (groups={groups}) are not supported"
            )
        cfg = type(self)._rank_config(config, options)
        k_h, k_w = _pair(kernel_size)
        super().__init__(
            out_channels,
            in_channels * k_h * k_w,
            max_rank=cfg.max_rank,
            max_rank_fraction=cfg.max_rank_fraction,
            min_rank=cfg.min_rank,
            free_factors=cfg.free_factors,
        )
        kernel = init_conv_geometry(
            self, in_channels, out_channels, (k_h, k_w), stride, padding, dilation, bias, device, dtype
        )
        ranks = self.resolve_ranks(cfg.ranks, cfg.rank_fraction)
        self._init_parameters(kernel.reshape(out_channels, -1), ranks)

    @classmethod
    def from_conv(
        cls,
        conv: nn.Conv2d,
        config: RankConfig | None = None,
        *,
        tau: float | None = None,
        name: str = "conv",
        **options: Any,
    ) -> MatrixFactorizedConv2d:
        """Factorize a trained convolution by truncated SVD of ``mat(W)`` (exact at full rank).

        The layer has ``conv``'s geometry, bias, device and dtype; its rank is ``config.ranks`` or
        ``config.rank_fraction`` of ``min(C_out, C_in k_h k_w)``, else ``r_max``, unless ``tau`` is given.

        Args:
            conv: The dense layer.
            config: The rank options (:class:`RankConfig`); ``None`` for the defaults.
            tau: Choose the rank by the relative tolerance ``tau`` instead (the integrator's truncation rule).
            name: Layer name used in error messages.
            **options: Fields of :class:`RankConfig` that replace those of ``config``.
        """
        check_conv_supported(conv, name)
        cfg = cls._rank_config(config, options, f"{cls.__name__}.from_conv")
        layer = rank_one_like(cls, conv, cfg)
        matrix = conv.weight.detach().reshape(conv.out_channels, -1)
        _init_matrix_layer(layer, matrix, conv.bias, cfg.ranks, cfg.rank_fraction, tau)
        return layer

    def dense_weight(self) -> Tensor:
        """The reconstructed kernel ``(U S Vᵀ)`` reshaped to ``C_out × C_in × k_h × k_w``."""
        return self.represented_tensor().reshape(self.out_channels, self.in_channels, *self.kernel_size)

    def to_dense(self) -> nn.Conv2d:
        """An :class:`torch.nn.Conv2d` with the reconstructed kernel and the same bias."""
        return dense_conv_of(self)

    def to_deployment(self) -> SVDConv2d:
        """The deployment :class:`~slimtrain.layers.SVDConv2d` (k×k conv, then 1×1) at the smaller rank."""
        u, v = (f.detach() for f in self.factors)
        reduce, expand = _smaller_split(u, self.core.detach(), v)
        out = SVDConv2d(
            self.in_channels, self.out_channels, self.kernel_size, reduce.shape[0],
            stride=self.stride, padding=self.padding, dilation=self.dilation, bias=self.bias is not None,
        ).to(device=u.device, dtype=u.dtype)  # fmt: skip
        with torch.no_grad():
            out.reduce.weight.copy_(reduce.reshape(out.reduce.weight.shape))
            out.expand.weight.copy_(expand[:, :, None, None])
            if self.bias is not None:
                out.expand.bias.copy_(self.bias)
        return out

    def forward(self, x: Tensor) -> Tensor:
        """k×k convolution to ``r_V`` channels, then a 1×1 convolution with ``U S``."""
        u, v = self.factors
        kernel = v.T.reshape(-1, self.in_channels, *self.kernel_size)
        x = F.conv2d(x, kernel, None, self.stride, self.padding, self.dilation)
        return pointwise_conv2d(x, u @ self.core, self.bias)

    def extra_repr(self) -> str:
        """Layer hyper-parameters and ranks, as printed by ``repr``."""
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, bias={self.bias is not None}, "
            + super().extra_repr()
        )


def _init_matrix_layer(
    layer: MatrixFactorizedLayer,
    matrix: Tensor,
    bias: Tensor | None,
    ranks: int | Sequence[int] | None,
    rank_fraction: float | None,
    tau: float | None,
) -> None:
    if tau is not None:
        chosen = layer.ranks_for_tolerance(matrix, tau)
        chosen = (max(chosen),) * 2
    else:
        chosen = layer.resolve_ranks(ranks, rank_fraction)
    layer._init_parameters(matrix, chosen)
    if bias is not None:
        with torch.no_grad():
            layer.bias.copy_(bias)


def _smaller_split(u: Tensor, core: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """Split ``U S Vᵀ`` into (reduce, expand) = (S Vᵀ, U) or (Vᵀ, U S), the one of smaller inner rank."""
    if core.shape[0] <= core.shape[1]:
        return core @ v.T, u
    return v.T, u @ core

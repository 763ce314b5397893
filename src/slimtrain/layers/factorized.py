"""Factorized replacements of dense layers: SVD conv pair, low-rank linear pair, Tucker-2 conv triple.

Each layer is an ordinary ``nn.Module`` built from standard ``nn.Conv2d``/``nn.Linear`` sub-layers, so it
exports to ONNX unchanged and is rebuilt from its :meth:`config` without pickling. ``from_*`` constructors
compute the factors from a dense layer (docs/metrics.md#macs gives their MAC counts).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from slimtrain.algebra.tucker import hosvd
from slimtrain.layers.pointwise import PointwiseConv2d
from slimtrain.layers.specs import register_layer_type


def _conv_geometry(conv: nn.Conv2d) -> dict[str, Any]:
    """Return the hyper-parameters a factorized conv must preserve, JSON-friendly."""
    padding = conv.padding if isinstance(conv.padding, str) else list(conv.padding)
    return {
        "kernel_size": list(conv.kernel_size),
        "stride": list(conv.stride),
        "padding": padding,
        "dilation": list(conv.dilation),
        "padding_mode": conv.padding_mode,
    }


def _as_pair(value: int | list[int] | tuple[int, ...]) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    return (int(value[0]), int(value[1]))


def _padding(value: str | int | list[int] | tuple[int, ...]) -> str | tuple[int, int]:
    return value if isinstance(value, str) else _as_pair(value)


def _check_rank(name: str, rank: int, limit: int) -> None:
    if not isinstance(rank, int) or isinstance(rank, bool) or not 1 <= rank <= limit:
        raise ValueError(f"{name} must be an integer in [1, {limit}], got {rank!r}")


def _delegate(child: str, attribute: str) -> property:
    """A read-only attribute of the replaced dense layer, read from the sub-layer ``child`` that keeps it."""
    return property(
        lambda self: getattr(getattr(self, child), attribute),
        doc=f"``{attribute}`` of the replaced layer (that of ``{child}``); read-only.",
    )


def _role_delegate(role: str, attribute: str) -> property:
    """A read-only attribute of the replaced conv, read from the sub-layer the attribute ``role`` names."""
    return property(
        lambda self: getattr(getattr(self, getattr(self, role)), attribute),
        doc=f"``{attribute}`` of the replaced conv (that of its {role.strip('_').replace('_', ' ')}).",
    )


class _ConvAttributes:
    """nn.Conv2d's attributes of a factorized conv, read-only, from its input, spatial and output sub-layers.

    For code that reads them from the layer it holds (Hugging Face's TF padding); subclasses name the three.
    """

    _input_layer: str
    _spatial_layer: str
    _output_layer: str
    in_channels = _role_delegate("_input_layer", "in_channels")
    out_channels = _role_delegate("_output_layer", "out_channels")
    kernel_size = _role_delegate("_spatial_layer", "kernel_size")
    stride = _role_delegate("_spatial_layer", "stride")
    padding = _role_delegate("_spatial_layer", "padding")
    dilation = _role_delegate("_spatial_layer", "dilation")
    groups = _role_delegate("_spatial_layer", "groups")
    padding_mode = _role_delegate("_spatial_layer", "padding_mode")
    bias = _role_delegate("_output_layer", "bias")


def _dense_conv(
    geometry: nn.Conv2d, out_channels: int, kernel: torch.Tensor, bias: torch.Tensor | None
) -> nn.Conv2d:
    """A dense conv with ``geometry``'s stride/padding/dilation/groups/padding mode and the given weights."""
    conv = nn.Conv2d(
        kernel.shape[1] * geometry.groups,
        out_channels,
        geometry.kernel_size,
        stride=geometry.stride,
        padding=geometry.padding,
        dilation=geometry.dilation,
        groups=geometry.groups,
        bias=bias is not None,
        padding_mode=geometry.padding_mode,
    ).to(device=kernel.device, dtype=kernel.dtype)
    with torch.no_grad():
        conv.weight.copy_(kernel)
        if bias is not None:
            conv.bias.copy_(bias)
    return conv


class SVDConv2d(_ConvAttributes, nn.Module):
    """A k×k conv with ``groups·rank`` filters followed by a 1×1 conv: a truncated matrix SVD of a conv.

    For each of the ``groups`` groups, mat(W_g) ∈ R^{c_out/g × (c_in/g)·kh·kw} ≈ U_r diag(σ) V_rᵀ; the first
    conv holds diag(σ)V_rᵀ (stride, padding, dilation, padding mode and groups of the dense conv), the second
    holds U_r and the dense bias (Zimmer et al., arXiv:2205.11921, low-rank evaluation;
    docs/sfw.md#evaluation-protocol).

    Args:
        in_channels: Input channels of the dense conv.
        out_channels: Output channels of the dense conv.
        kernel_size: Kernel size of the dense conv.
        rank: Rank kept per group (the first conv has ``groups·rank`` filters).
        stride: Stride of the dense conv.
        padding: Padding of the dense conv (int, pair or ``"same"``/``"valid"``).
        dilation: Dilation of the dense conv.
        groups: Groups of the dense conv; the factorization is block-diagonal over groups.
        bias: Whether the dense conv had a bias (kept on the 1×1 conv).
        padding_mode: Padding mode of the dense conv.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        rank: int,
        *,
        stride: int | tuple[int, int] = 1,
        padding: str | int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
    ):
        super().__init__()
        kernel_size = _as_pair(kernel_size)
        _check_rank(
            "rank", rank, min(out_channels // groups, in_channels // groups * kernel_size[0] * kernel_size[1])
        )
        self.rank = rank
        self.reduce = nn.Conv2d(
            in_channels,
            groups * rank,
            kernel_size,
            stride=_as_pair(stride),
            padding=_padding(padding),
            dilation=_as_pair(dilation),
            groups=groups,
            bias=False,
            padding_mode=padding_mode,
        )
        self.expand = (
            PointwiseConv2d(rank, out_channels, bias=bias)
            if groups == 1
            else nn.Conv2d(groups * rank, out_channels, 1, groups=groups, bias=bias)
        )

    _input_layer = _spatial_layer = "reduce"
    _output_layer = "expand"

    @property
    def weight(self) -> torch.Tensor:
        """The dense-equivalent weight, rebuilt from the factors at each read (a reconstruction).

        Not a parameter; code reading the replaced layer's ``weight`` (dtype, device, values) keeps working.
        Read-only.
        """
        g, r = self.reduce.groups, self.rank
        out_per_group = self.expand.out_channels // g
        u = self.expand.weight.reshape(g, out_per_group, r)
        v = self.reduce.weight.reshape(g, r, -1)
        return torch.bmm(u, v).reshape(self.expand.out_channels, *self.reduce.weight.shape[1:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the k×k reduction and then the 1×1 expansion."""
        return self.expand(self.reduce(x))

    def config(self) -> dict[str, Any]:
        """Return the constructor arguments (JSON-serialisable)."""
        return {
            "in_channels": self.reduce.in_channels,
            "out_channels": self.expand.out_channels,
            "rank": self.rank,
            "groups": self.reduce.groups,
            "bias": self.expand.bias is not None,
            **_conv_geometry(self.reduce),
        }

    def to_dense(self) -> nn.Conv2d:
        """Return the dense conv with the reconstructed (rank-limited) kernel; same function."""
        return _dense_conv(self.reduce, self.expand.out_channels, self.weight.detach(), self.expand.bias)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, rank: int) -> SVDConv2d:
        """Factorize ``conv`` by a truncated SVD of each group's matricised kernel.

        Args:
            conv: The dense conv (left unchanged).
            rank: Rank kept per group.

        Returns:
            The factorized layer, same dtype and device as ``conv``; exact when ``rank`` is full.
        """
        g = conv.groups
        geometry = _conv_geometry(conv)
        layer = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            rank,
            stride=conv.stride,
            padding=geometry["padding"],
            dilation=conv.dilation,
            groups=g,
            bias=conv.bias is not None,
            padding_mode=conv.padding_mode,
        ).to(device=conv.weight.device, dtype=conv.weight.dtype)
        weight = conv.weight.detach().double()
        out_per_group = conv.out_channels // g
        reduce_blocks, expand_blocks = [], []
        for block in weight.split(out_per_group, dim=0):
            u, s, vh = torch.linalg.svd(block.reshape(out_per_group, -1), full_matrices=False)
            reduce_blocks.append((s[:rank, None] * vh[:rank]).reshape(rank, *block.shape[1:]))
            expand_blocks.append(u[:, :rank].reshape(out_per_group, rank, 1, 1))
        with torch.no_grad():
            layer.reduce.weight.copy_(torch.cat(reduce_blocks))
            layer.expand.weight.copy_(torch.cat(expand_blocks))
            if conv.bias is not None:
                layer.expand.bias.copy_(conv.bias)
        return layer


class LowRankLinear(nn.Module):
    """Two linears ``in → rank → out`` from a truncated SVD W ≈ U_r diag(σ) V_rᵀ (bias on the second).

    Args:
        in_features: Input features of the dense layer.
        out_features: Output features of the dense layer.
        rank: Inner dimension.
        bias: Whether the dense layer had a bias.
    """

    def __init__(self, in_features: int, out_features: int, rank: int, *, bias: bool = True):
        super().__init__()
        _check_rank("rank", rank, min(in_features, out_features))
        self.rank = rank
        self.reduce = nn.Linear(in_features, rank, bias=False)
        self.expand = nn.Linear(rank, out_features, bias=bias)

    in_features = _delegate("reduce", "in_features")
    out_features = _delegate("expand", "out_features")
    bias = _delegate("expand", "bias")

    @property
    def weight(self) -> torch.Tensor:
        """The dense-equivalent weight, rebuilt from the factors at each read (a reconstruction).

        Not a parameter; code reading the replaced layer's ``weight`` (dtype, device, values) keeps working.
        Read-only.
        """
        return self.expand.weight @ self.reduce.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply diag(σ)V_rᵀ and then U_r."""
        return self.expand(self.reduce(x))

    def config(self) -> dict[str, Any]:
        """Return the constructor arguments (JSON-serialisable)."""
        return {
            "in_features": self.reduce.in_features,
            "out_features": self.expand.out_features,
            "rank": self.rank,
            "bias": self.expand.bias is not None,
        }

    def to_dense(self) -> nn.Linear:
        """Return the dense linear with the reconstructed (rank-limited) weight; same function."""
        linear = nn.Linear(
            self.reduce.in_features, self.expand.out_features, bias=self.expand.bias is not None
        )
        linear = linear.to(device=self.reduce.weight.device, dtype=self.reduce.weight.dtype)
        with torch.no_grad():
            linear.weight.copy_(self.weight)
            if self.expand.bias is not None:
                linear.bias.copy_(self.expand.bias)
        return linear

    @classmethod
    def from_linear(cls, linear: nn.Linear, rank: int) -> LowRankLinear:
        """Factorize ``linear`` by truncated SVD (exact at full rank); ``linear`` is left unchanged."""
        layer = cls(linear.in_features, linear.out_features, rank, bias=linear.bias is not None).to(
            device=linear.weight.device, dtype=linear.weight.dtype
        )
        u, s, vh = torch.linalg.svd(linear.weight.detach().double(), full_matrices=False)
        with torch.no_grad():
            layer.reduce.weight.copy_(s[:rank, None] * vh[:rank])
            layer.expand.weight.copy_(u[:, :rank])
            if linear.bias is not None:
                layer.expand.bias.copy_(linear.bias)
        return layer


class TuckerConv2d(_ConvAttributes, nn.Module):
    """Tucker-2 conv: 1×1 projection (c_in → r_in) → k×k core conv (r_in → r_out) → 1×1 expansion (→ c_out).

    W ≈ C ×₁ U_out ×₂ U_in with the spatial modes kept full; the projection runs at input resolution, the
    core carries the stride, padding, dilation and padding mode (a per-pixel linear map commutes with every
    padding mode), the expansion carries the bias (Zangrando et al., arXiv:2305.19059;
    docs/tdlrt.md#tucker-format-and-its-gradients and docs/metrics.md#macs "Tucker three-stage conv"). Grouped
    convs are not supported.

    Args:
        in_channels: Input channels of the dense conv.
        out_channels: Output channels of the dense conv.
        kernel_size: Kernel size of the dense conv.
        rank_out: Tucker rank of the output-channel mode (r₁).
        rank_in: Tucker rank of the input-channel mode (r₂).
        stride: Stride of the dense conv.
        padding: Padding of the dense conv.
        dilation: Dilation of the dense conv.
        bias: Whether the dense conv had a bias.
        padding_mode: Padding mode of the dense conv.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        rank_out: int,
        rank_in: int,
        *,
        stride: int | tuple[int, int] = 1,
        padding: str | int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
    ):
        super().__init__()
        _check_rank("rank_out", rank_out, out_channels)
        _check_rank("rank_in", rank_in, in_channels)
        self.rank_out, self.rank_in = rank_out, rank_in
        self.project = PointwiseConv2d(in_channels, rank_in, bias=False)
        self.core = nn.Conv2d(
            rank_in,
            rank_out,
            _as_pair(kernel_size),
            stride=_as_pair(stride),
            padding=_padding(padding),
            dilation=_as_pair(dilation),
            bias=False,
            padding_mode=padding_mode,
        )
        self.expand = PointwiseConv2d(rank_out, out_channels, bias=bias)

    _input_layer, _spatial_layer, _output_layer = "project", "core", "expand"

    @property
    def weight(self) -> torch.Tensor:
        """The dense-equivalent weight, rebuilt from the factors at each read (a reconstruction).

        Not a parameter; code reading the replaced layer's ``weight`` (dtype, device, values) keeps working.
        Read-only.
        """
        return torch.einsum(
            "rshw,or,si->oihw",
            self.core.weight,
            self.expand.weight[:, :, 0, 0],
            self.project.weight[:, :, 0, 0],
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply projection, core and expansion."""
        return self.expand(self.core(self.project(x)))

    def config(self) -> dict[str, Any]:
        """Return the constructor arguments (JSON-serialisable)."""
        return {
            "in_channels": self.project.in_channels,
            "out_channels": self.expand.out_channels,
            "rank_out": self.rank_out,
            "rank_in": self.rank_in,
            "bias": self.expand.bias is not None,
            **_conv_geometry(self.core),
        }

    def to_dense(self) -> nn.Conv2d:
        """Return the dense conv with the reconstructed kernel C ×₁ U_out ×₂ U_in; same function."""
        return _dense_conv(self.core, self.expand.out_channels, self.weight.detach(), self.expand.bias)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, rank_out: int, rank_in: int) -> TuckerConv2d:
        """Factorize ``conv`` by truncated HOSVD of its two channel modes (exact at full ranks).

        U_out and U_in are the leading left singular vectors of the mode-1 and mode-2 unfoldings, and
        C = W ×₁ U_outᵀ ×₂ U_inᵀ (De Lathauwer et al., SIAM J. Matrix Anal. Appl. 21(4), 2000).

        Raises:
            ValueError: If ``conv.groups > 1``.
        """
        if conv.groups != 1:
            raise ValueError(f"Tucker factorization needs groups=1, got a conv with groups={conv.groups}")
        geometry = _conv_geometry(conv)
        layer = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            rank_out,
            rank_in,
            stride=conv.stride,
            padding=geometry["padding"],
            dilation=conv.dilation,
            bias=conv.bias is not None,
            padding_mode=conv.padding_mode,
        ).to(device=conv.weight.device, dtype=conv.weight.dtype)
        core, (u_out, u_in, _, _) = hosvd(conv.weight.detach().double(), (rank_out, rank_in, None, None))
        with torch.no_grad():
            layer.project.weight.copy_(u_in.T[:, :, None, None])
            layer.core.weight.copy_(core)
            layer.expand.weight.copy_(u_out[:, :, None, None])
            if conv.bias is not None:
                layer.expand.bias.copy_(conv.bias)
        return layer


FACTORIZED_DEPLOYMENT_LAYERS = (SVDConv2d, LowRankLinear, TuckerConv2d)
"""The deployment layers a factorization produces: their sub-layers are never factorized again by default."""

register_layer_type("slimtrain.SVDConv2d", SVDConv2d, v1_name="SVDConv2d")
register_layer_type("slimtrain.LowRankLinear", LowRankLinear, v1_name="LowRankLinear")
register_layer_type("slimtrain.TuckerConv2d", TuckerConv2d, v1_name="TuckerConv2d")

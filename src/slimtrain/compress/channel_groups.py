"""Coupled channel groups: the unit of structured (filter/channel) pruning.

A group is a set of channels that must be removed together: the output channels of every layer feeding a
residual addition, the matching BatchNorm entries, and the input channels (or, after a flatten, input
features) of every consuming layer. The groups come from Torch-Pruning's dependency graph through
:mod:`slimtrain.compress.torch_pruning_adapter`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn
from torch.nn.modules.conv import _ConvNd

ChannelDim = Literal["out", "in"]


def weight_channel_axis(module: nn.Module, dim: ChannelDim) -> int:
    """The axis of ``module.weight`` along which its ``dim`` channels run.

    Convolutions and linears store ``[out, in/groups, ...]``; transposed convolutions store
    ``[in, out/groups, ...]``.
    """
    transposed = isinstance(module, _ConvNd) and module.transposed
    return int(transposed) if dim == "out" else int(not transposed)


@dataclass(frozen=True)
class ChannelSlice:
    """The entries of one layer that belong to a channel group.

    Attributes:
        module: Qualified name of the layer (conv, linear or BatchNorm).
        dim: ``"out"`` for output channels (BatchNorm: its channels), ``"in"`` for input channels/features.
        indices: Indices along ``dim`` of the layer.
        root_indices: For each entry of ``indices``, the channel of the group's root layer it belongs to.
    """

    module: str
    dim: ChannelDim
    indices: tuple[int, ...]
    root_indices: tuple[int, ...]

    def restricted_to(self, root_channels: frozenset[int]) -> ChannelSlice:
        """Return the slice's entries that belong to the given root channels."""
        pairs = [(i, r) for i, r in zip(self.indices, self.root_indices, strict=True) if r in root_channels]
        return ChannelSlice(self.module, self.dim, tuple(i for i, _ in pairs), tuple(r for _, r in pairs))


@dataclass(frozen=True)
class ChannelGroup:
    """A set of coupled channels, indexed by the output channels of its root layer.

    Attributes:
        root: Qualified name of the root layer (the first conv/linear whose output channels span the group).
        size: Number of channels of the root layer.
        members: The slices of every layer with parameters that the group touches (the root included).
    """

    root: str
    size: int
    members: tuple[ChannelSlice, ...]

    def restricted_to(self, root_channels: frozenset[int]) -> tuple[ChannelSlice, ...]:
        """Return the members' entries belonging to the given root channels (non-empty slices only)."""
        slices = (member.restricted_to(root_channels) for member in self.members)
        return tuple(s for s in slices if s.indices)

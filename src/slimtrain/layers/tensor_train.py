"""Linear layer whose weight is stored as tensor-train cores (exported NN-BCD TT layer, docs/nnbcd.md)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from slimtrain.algebra.tt import tt_reconstruct, tt_svd_matrix
from slimtrain.layers.specs import register_layer_type


class TTLinear(nn.Module):
    """``y = x Wᵀ (+ b)`` with W stored as the TT cores of its row-major reshape to ``modes``.

    The weight is reconstructed densely in every forward pass: the modes vectorise the matrix, so there is
    no fast TT mat-vec (storage compression only, docs/metrics.md#macs).

    Args:
        cores: TT cores of shape (r_{k−1}, n_k, r_k), r_0 = r_d = 1, with ``∏ n_k = out·in``.
        in_features: Input width.
        out_features: Output width.
        bias: Optional bias of length ``out_features``.

    Raises:
        ValueError: If the cores do not describe an ``out_features × in_features`` matrix.
    """

    # The metrics count the dense product this layer runs (docs/metrics.md#macs), not the reconstruction.
    macs_as_dense: ClassVar[bool] = True

    def __init__(
        self,
        cores: Sequence[torch.Tensor],
        in_features: int,
        out_features: int,
        bias: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        modes = tuple(int(core.shape[1]) for core in cores)
        if math.prod(modes) != in_features * out_features:
            raise ValueError(
                f"TT modes {modes} multiply to {math.prod(modes)}, not {out_features}×{in_features}"
            )
        if cores[0].shape[0] != 1 or cores[-1].shape[2] != 1:
            raise ValueError("the first TT core must have left rank 1 and the last right rank 1")
        self.in_features = in_features
        self.out_features = out_features
        self.cores = nn.ParameterList(nn.Parameter(core.detach().clone()) for core in cores)
        if bias is not None and bias.shape != (out_features,):
            raise ValueError(f"bias must have shape ({out_features},), got {tuple(bias.shape)}")
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone())

    @classmethod
    def from_weight(cls, weight: torch.Tensor, modes: Sequence[int], rank: int) -> TTLinear:
        """TT-SVD a dense ``out × in`` weight with uniform capped rank and wrap it (no bias).

        Args:
            weight: Dense weight matrix.
            modes: Mode tuple for the row-major reshape.
            rank: Requested uniform TT rank.

        Returns:
            The TT layer.
        """
        cores = tt_svd_matrix(weight, modes, rank).cores
        return cls(cores, in_features=weight.shape[1], out_features=weight.shape[0])

    @classmethod
    def from_config(
        cls, in_features: int, out_features: int, modes: Sequence[int], ranks: Sequence[int], bias: bool
    ) -> TTLinear:
        """An uninitialised layer of the given shape (zero cores), to be filled by ``load_state_dict``."""
        cores = [torch.zeros(ranks[k], modes[k], ranks[k + 1]) for k in range(len(modes))]
        return cls(cores, in_features, out_features, torch.zeros(out_features) if bias else None)

    def config(self) -> dict[str, Any]:
        """The :meth:`from_config` arguments of this layer (JSON-serialisable), for export manifests."""
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "modes": list(self.modes),
            "ranks": list(self.ranks),
            "bias": self.bias is not None,
        }

    @property
    def modes(self) -> tuple[int, ...]:
        """Mode sizes of the TT tensor."""
        return tuple(int(core.shape[1]) for core in self.cores)

    @property
    def ranks(self) -> tuple[int, ...]:
        """Bond ranks ``(r_0, …, r_d)``."""
        return (1, *(int(core.shape[2]) for core in self.cores))

    @property
    def weight(self) -> torch.Tensor:
        """The dense ``out × in`` weight 𝒯(G), reconstructed from the cores on each read (not a parameter)."""
        return tt_reconstruct(list(self.cores)).reshape(self.out_features, self.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the layer to inputs of shape (…, in_features)."""
        return F.linear(x, self.weight, self.bias)

    def dense_parameter_count(self) -> int:
        """Parameters of the equivalent dense layer: in·out (+ out for the bias)."""
        return self.in_features * self.out_features + (0 if self.bias is None else self.out_features)

    def stored_parameter_count(self) -> int:
        """Parameters actually stored: Σ core sizes (+ bias)."""
        return sum(core.numel() for core in self.cores) + (0 if self.bias is None else self.bias.numel())

    def extra_repr(self) -> str:
        """Summarise the shape, modes and ranks."""
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, modes={self.modes}, "
            f"ranks={self.ranks}, bias={self.bias is not None}"
        )


register_layer_type("slimtrain.TTLinear", TTLinear, v1_name="TTLinear")

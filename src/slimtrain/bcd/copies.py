"""Compressed copies coupled to NN-BCD weights: tensor-train and pruned (docs/nnbcd.md).

A copy holds T_i (𝒯(G_i) or W̃_i) for one layer, is updated by the last block of each layer's step
(docs/nnbcd.md#one-sweep step 7) and is what the compressed network evaluates with
(docs/nnbcd.md#evaluation-network-and-linear-algebra). The solver owns one copy object per compressed layer.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from slimtrain.algebra.tt import tt_reconstruct, tt_storage, tt_svd_matrix
from slimtrain.bcd.prune import ThresholdRule, hard_threshold
from slimtrain.bcd.tt_als import tt_als_sweep
from slimtrain.layers import TTLinear


class CompressedCopy(ABC):
    """A compressed copy T of a weight W and its projection step."""

    in_place: bool = False

    @abstractmethod
    def check_shape(self, shape: tuple[int, int], layer: str) -> None:
        """Raise ``ValueError`` naming ``layer`` if the copy cannot represent a weight of ``shape``."""

    @abstractmethod
    def reset(self, weight: torch.Tensor) -> None:
        """Initialise the copy from a weight (before the first sweep)."""

    @abstractmethod
    def update(self, weight: torch.Tensor) -> torch.Tensor:
        """Project the updated weight; return the weight the solver keeps (W itself unless in place)."""

    @property
    @abstractmethod
    def matrix(self) -> torch.Tensor:
        """The current copy T as a dense d_out × d_in matrix."""

    @abstractmethod
    def to_module(self) -> nn.Module:
        """The copy as an evaluation layer (no bias)."""

    @abstractmethod
    def stored_parameter_count(self) -> int:
        """Numbers stored by the copy (core sizes, or non-zeros)."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """The copy's state (tensors and plain values) for checkpointing."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""


class TensorTrainCopy(CompressedCopy):
    """TT copy 𝒯(G) with uniform capped rank, recomputed by TT-SVD of W each sweep (docs/nnbcd.md).

    TT-SVD is quasi-optimal, so a fresh projection can be farther from W than the previous cores and raise
    Φ. With ``safeguard=True`` (default, corrected behaviour of docs/nnbcd.md#defaults-and-faithful-flags),
    whenever ``‖W − 𝒯(G_new)‖ > ‖W − 𝒯(G_old)‖`` the previous cores are refitted to W by one ALS sweep instead
    (:func:`~slimtrain.bcd.tt_als.tt_als_sweep`, never farther from W than they were), so the sweep is
    monotone and the copy still follows W. Merely keeping the old cores would also be monotone, but at low
    ranks it rejects almost every update (W is pulled towards 𝒯(G_old), where TT-SVD does worst) and the copy
    stalls near its initial value. ``safeguard=False`` always takes the TT-SVD cores, as the reference code
    does.

    Args:
        modes: Mode tuple of the row-major reshape of the layer's d_out × d_in weight.
        rank: Requested uniform TT rank.
        safeguard: Refit the old cores by ALS when the TT-SVD cores are farther from W.

    Attributes:
        rejected_updates: How many TT-SVD projections the safeguard replaced by an ALS refit.
    """

    def __init__(self, modes: Sequence[int], rank: int, safeguard: bool = True) -> None:
        self.modes = tuple(int(n) for n in modes)
        self.rank = int(rank)
        self.safeguard = safeguard
        tt_storage(self.modes, self.rank)  # validates modes and rank early
        self.cores: list[torch.Tensor] = []
        self._matrix: torch.Tensor | None = None
        self.rejected_updates = 0

    def check_shape(self, shape: tuple[int, int], layer: str) -> None:
        """Raise ``ValueError`` naming ``layer`` if the modes do not multiply to the weight size."""
        if math.prod(self.modes) != shape[0] * shape[1]:
            raise ValueError(
                f"{layer}: TT modes {self.modes} multiply to {math.prod(self.modes)}, but the weight "
                f"{shape[0]}×{shape[1]} has {shape[0] * shape[1]} entries"
            )

    def reset(self, weight: torch.Tensor) -> None:
        """Initialise the cores by TT-SVD of ``weight``."""
        self._set(weight, tt_svd_matrix(weight, self.modes, self.rank).cores)

    def _set(self, weight: torch.Tensor, cores: list[torch.Tensor]) -> None:
        self.cores = cores
        self._matrix = tt_reconstruct(cores).reshape(weight.shape)

    def update(self, weight: torch.Tensor) -> torch.Tensor:
        """Replace the cores by TT-SVD(W), or with the safeguard by the better refit; W is unchanged."""
        cores = tt_svd_matrix(weight, self.modes, self.rank).cores
        candidate = tt_reconstruct(cores).reshape(weight.shape)
        if self.safeguard:
            previous = torch.linalg.norm(weight - self.matrix)
            if torch.linalg.norm(weight - candidate) > previous:
                self.rejected_updates += 1
                cores = tt_als_sweep(weight.reshape(self.modes), self.cores)
                candidate = tt_reconstruct(cores).reshape(weight.shape)
                if torch.linalg.norm(weight - candidate) > previous:  # only by rounding: keep the old cores
                    return weight
        self.cores, self._matrix = cores, candidate
        return weight

    @property
    def matrix(self) -> torch.Tensor:
        """𝒯(G) as a d_out × d_in matrix."""
        if self._matrix is None:
            raise RuntimeError("TensorTrainCopy used before reset()")
        return self._matrix

    def to_module(self) -> TTLinear:
        """A :class:`TTLinear` holding the current cores."""
        rows, cols = self.matrix.shape
        return TTLinear(self.cores, in_features=cols, out_features=rows)

    def stored_parameter_count(self) -> int:
        """Σ_k r_{k−1} n_k r_k."""
        return tt_storage(self.modes, self.rank)

    def state_dict(self) -> dict[str, Any]:
        """Cores, matrix shape and the count of rejected updates."""
        return {
            "cores": [core.clone() for core in self.cores],
            "shape": list(self.matrix.shape),
            "rejected_updates": self.rejected_updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the cores (𝒯(G) is recomputed from them) and the rejection count.

        Raises:
            ValueError: If the cores do not have this copy's modes.
        """
        cores = list(state["cores"])
        modes = tuple(int(core.shape[1]) for core in cores)
        if modes != self.modes:
            raise ValueError(f"TT state has modes {modes}, this copy has modes {self.modes}")
        self.cores = cores
        self._matrix = tt_reconstruct(cores).reshape(tuple(state["shape"]))
        self.rejected_updates = int(state["rejected_updates"])


class PrunedCopy(CompressedCopy):
    """Sparse copy W̃ = H_s(W) per layer (docs/nnbcd.md#hard-threshold-pruning).

    Default (corrected, docs/nnbcd.md#defaults-and-faithful-flags): W̃ is a separate tensor, exactly the copy
    of the objective, so every block is an exact minimiser and Φ is monotone. ``in_place=True`` reproduces the
    reference code, where the copy aliases W and W itself is thresholded after its update (a projected,
    IHT-like step that is not monotone in Φ; the compression term is then identically zero).

    Args:
        sparsity: Fraction s ∈ [0, 1) of the layer's entries set to zero.
        rule: ``"topk"`` exact count (default) or ``"quantile"`` (reference).
        in_place: Threshold W itself (reference behaviour).
    """

    def __init__(self, sparsity: float, rule: ThresholdRule = "topk", in_place: bool = False) -> None:
        if not 0.0 <= sparsity < 1.0:
            raise ValueError(f"sparsity must lie in [0, 1), got {sparsity}")
        if rule not in ("topk", "quantile"):
            raise ValueError(f"unknown threshold rule {rule!r}; use 'topk' or 'quantile'")
        self.sparsity = float(sparsity)
        self.rule: ThresholdRule = rule
        self.in_place = in_place
        self._matrix: torch.Tensor | None = None

    def check_shape(self, shape: tuple[int, int], layer: str) -> None:
        """Any matrix can be thresholded; nothing to check."""

    def reset(self, weight: torch.Tensor) -> None:
        """Initialise W̃ = H_s(W)."""
        self._matrix = hard_threshold(weight, self.sparsity, self.rule)

    def update(self, weight: torch.Tensor) -> torch.Tensor:
        """W̃ ← H_s(W); returns W̃ as the new W in place mode, else W unchanged."""
        self._matrix = hard_threshold(weight, self.sparsity, self.rule)
        return self._matrix if self.in_place else weight

    @property
    def matrix(self) -> torch.Tensor:
        """W̃."""
        if self._matrix is None:
            raise RuntimeError("PrunedCopy used before reset()")
        return self._matrix

    def to_module(self) -> nn.Linear:
        """An ``nn.Linear`` (no bias) holding W̃, zeros included."""
        rows, cols = self.matrix.shape
        layer = nn.Linear(cols, rows, bias=False, dtype=self.matrix.dtype, device=self.matrix.device)
        layer.weight = nn.Parameter(self.matrix.detach().clone())
        return layer

    def stored_parameter_count(self) -> int:
        """Number of non-zeros of W̃."""
        return int(torch.count_nonzero(self.matrix))

    def state_dict(self) -> dict[str, Any]:
        """W̃."""
        return {"matrix": self.matrix.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore W̃."""
        self._matrix = state["matrix"]

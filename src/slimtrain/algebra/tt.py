"""Tensor-train SVD with uniform rank capping (Oseledets 2011; docs/nnbcd.md#tensor-train-projection).

NN-BCD reshapes each compressed weight matrix (row-major) into a tensor with the layer's mode tuple and
projects it to tensor-train form with one requested rank r for every bond, capped at the unfolding sizes:
``r_k = min(r, ∏_{j≤k} n_j, ∏_{j>k} n_j)``. The modes vectorise the matrix; they do not pair rows with
columns as the TT-matrix format does, so a TT layer stores fewer numbers but computes densely.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch


class TTSVDResult(NamedTuple):
    """Cores of a TT-SVD and the Frobenius norm of the singular values discarded at each step.

    Attributes:
        cores: Cores G_k of shape (r_{k−1}, n_k, r_k), r_0 = r_d = 1.
        truncation_errors: ε_k for k = 1..d−1; ‖T − 𝒯(G)‖_F ≤ sqrt(Σ ε_k²) (Oseledets 2011, Thm 2.2).
    """

    cores: list[torch.Tensor]
    truncation_errors: list[float]


def _check_modes(modes: Sequence[int], rank: int) -> None:
    if len(modes) == 0 or any(int(n) < 1 for n in modes):
        raise ValueError(f"TT modes must be a non-empty tuple of positive sizes, got {tuple(modes)}")
    if rank < 1:
        raise ValueError(f"TT rank must be ≥ 1, got {rank}")


def tt_ranks(modes: Sequence[int], rank: int) -> list[int]:
    """Capped bond ranks ``[r_0, …, r_d]`` for a uniform requested rank (docs/nnbcd.md).

    Args:
        modes: Mode sizes (n_1, …, n_d).
        rank: Requested uniform rank r.

    Returns:
        ``[1, r_1, …, r_{d−1}, 1]`` with ``r_k = min(r, ∏_{j≤k} n_j, ∏_{j>k} n_j)``.
    """
    _check_modes(modes, rank)
    inner = [min(rank, math.prod(modes[:k]), math.prod(modes[k:])) for k in range(1, len(modes))]
    return [1, *inner, 1]


def tt_storage(modes: Sequence[int], rank: int) -> int:
    """Number of stored TT parameters ``Σ_k r_{k−1} n_k r_k`` with capped ranks.

    Args:
        modes: Mode sizes (n_1, …, n_d).
        rank: Requested uniform rank r.

    Returns:
        The total size of the cores.
    """
    ranks = tt_ranks(modes, rank)
    return sum(ranks[k] * n * ranks[k + 1] for k, n in enumerate(modes))


def tt_svd(tensor: torch.Tensor, rank: int) -> TTSVDResult:
    """TT-SVD of a tensor with uniform requested rank and the capping of docs/nnbcd.md.

    Runs on the tensor's device and dtype (torch SVDs, no host round trip).

    Args:
        tensor: Tensor of shape (n_1, …, n_d).
        rank: Requested uniform rank r.

    Returns:
        The cores and the per-step truncation errors.
    """
    modes = tuple(tensor.shape)
    _check_modes(modes, rank)
    cores: list[torch.Tensor] = []
    errors: list[float] = []
    remainder = tensor.reshape(1, -1)
    left_rank = 1
    for n_k in modes[:-1]:
        unfolding = remainder.reshape(left_rank * n_k, -1)
        u, s, vh = torch.linalg.svd(unfolding, full_matrices=False)
        # Equal to min(r, ∏_{j≤k} n_j, ∏_{j>k} n_j) because left_rank is itself capped.
        r_k = min(rank, unfolding.shape[0], unfolding.shape[1])
        errors.append(float(torch.linalg.vector_norm(s[r_k:])))
        cores.append(u[:, :r_k].reshape(left_rank, n_k, r_k))
        remainder = s[:r_k, None] * vh[:r_k]
        left_rank = r_k
    cores.append(remainder.reshape(left_rank, modes[-1], 1))
    return TTSVDResult(cores, errors)


def tt_reconstruct(cores: Sequence[torch.Tensor]) -> torch.Tensor:
    """Contract TT cores into the full tensor of shape (n_1, …, n_d).

    Args:
        cores: Cores of shape (r_{k−1}, n_k, r_k) with r_0 = r_d = 1.

    Returns:
        The full tensor 𝒯(G).

    Raises:
        ValueError: If neighbouring core ranks do not match.
    """
    result = cores[0].reshape(cores[0].shape[1], cores[0].shape[2])
    for k, core in enumerate(cores[1:], start=1):
        if core.shape[0] != result.shape[-1]:
            raise ValueError(
                f"TT core {k} has left rank {core.shape[0]}, previous right rank {result.shape[-1]}"
            )
        result = (result @ core.reshape(core.shape[0], -1)).reshape(-1, core.shape[2])
    return result.reshape(tuple(core.shape[1] for core in cores))


def tt_svd_matrix(weight: torch.Tensor, modes: Sequence[int], rank: int) -> TTSVDResult:
    """TT-SVD of a weight matrix reshaped row-major to ``modes`` (docs/nnbcd.md#tensor-train-projection).

    Args:
        weight: Matrix of shape d_out×d_in.
        modes: Mode tuple with ``∏ modes = d_out·d_in``.
        rank: Requested uniform rank r.

    Returns:
        The cores and the per-step truncation errors.

    Raises:
        ValueError: If the modes do not multiply to the number of weight entries.
    """
    if math.prod(modes) != weight.numel():
        raise ValueError(
            f"TT modes {tuple(modes)} multiply to {math.prod(modes)}, but the weight {tuple(weight.shape)} "
            f"has {weight.numel()} entries"
        )
    return tt_svd(weight.reshape(tuple(modes)), rank)

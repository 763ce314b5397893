"""Scores of the sparsity core: the importance of each prunable entry, smallest pruned first.

Methods and baselines differ only in their scores (as in jaxpruner, where an algorithm overrides the scoring
and shares selection, masks and schedules); :mod:`slimtrain.pruning.selection` turns scores into exact
selections. Every score is detached and at least float32, so every rank compares the same numbers.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

__all__ = ["batchnorm_gamma_scores", "group_norm_scores", "magnitude_scores"]


def magnitude_scores(tensors: Mapping[str, Tensor]) -> Tensor:
    """|w| of every entry of the tensors, flattened and concatenated in mapping order.

    Args:
        tensors: Named tensors (e.g. weights), non-empty.

    Returns:
        A 1-D detached tensor in the promotion of the tensors' dtypes and float32 (half-precision weights are
        compared in float32 on every rank).
    """
    dtype = torch.float32
    for t in tensors.values():
        dtype = torch.promote_types(dtype, t.dtype)
    # One abs over the concatenation rather than one per tensor: fewer small kernels per training step.
    return torch.cat([t.detach().reshape(-1).to(dtype) for t in tensors.values()]).abs_()


def group_norm_scores(weight: Tensor, dim: int = 0, ord: float = 2.0) -> Tensor:
    """The ``ord``-norm of each slice of ``weight`` along ``dim`` (a filter's norm for ``dim=0``).

    Args:
        weight: A weight tensor (e.g. a convolution's ``(c_out, c_in, kh, kw)``).
        dim: The axis whose slices are scored (0: output channels).
        ord: The vector norm (1: L1 filter pruning, 2: group lasso's groups).

    Returns:
        A 1-D tensor of ``weight.shape[dim]`` norms, differentiable when ``weight`` is (penalties use it).
    """
    return torch.linalg.vector_norm(weight.movedim(dim, 0).flatten(1), ord=ord, dim=1)


def batchnorm_gamma_scores(norm: nn.Module) -> Tensor:
    """|γ| of a normalization layer's channels, the gate score of network slimming and structured SWD.

    Args:
        norm: A BatchNorm (or any layer with a per-channel ``weight``).

    Returns:
        The detached |γ|, one entry per channel.

    Raises:
        ValueError: If the layer has no affine scale.
    """
    gamma = getattr(norm, "weight", None)
    if not isinstance(gamma, Tensor):
        raise ValueError(f"{type(norm).__name__} has no affine scale (weight) to score its channels by")
    return gamma.detach().abs()

"""The standard post-training compression of a trained model at one level, by structure name."""

from __future__ import annotations

import copy

import torch
from torch import nn


def _prunable_weights(model: nn.Module) -> list[torch.Tensor]:
    return [m.weight for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]


@torch.no_grad()
def global_magnitude_prune(model: nn.Module, sparsity: float) -> nn.Module:
    """Zero the ``sparsity`` fraction of smallest-magnitude conv/linear weights, ranked globally."""
    pruned = copy.deepcopy(model)
    weights = _prunable_weights(pruned)
    magnitudes = torch.cat([w.abs().flatten() for w in weights])
    count = round(sparsity * magnitudes.numel())
    if count == 0:
        return pruned
    keep = torch.ones_like(magnitudes, dtype=torch.bool)
    keep[torch.topk(magnitudes, count, largest=False, sorted=False).indices] = False
    offset = 0
    for w in weights:
        w.mul_(keep[offset : offset + w.numel()].view_as(w))
        offset += w.numel()
    return pruned


def compress_standard(model: nn.Module, structure: str, level: float) -> nn.Module:
    """Return a compressed copy of ``model`` at ``level`` of ``structure`` (``native``: unchanged)."""
    if structure == "native":
        return model
    if structure == "unstructured":
        return global_magnitude_prune(model, level)
    raise ValueError(f"unknown compression structure '{structure}'")

"""The standard post-training compression of a trained model at one level, by structure name.

These are the SFW paper's one-shot evaluation operators (docs/sfw.md#evaluation-protocol), used by every
method that chooses its level after training: ``unstructured`` = global magnitude pruning over conv + linear
weights, ``filter`` = uniform per-group L1 filter pruning applied as masks over coupled channel groups,
``lowrank`` = per-layer truncated SVD of every conv (k×k conv + 1×1 conv, uniform rank fraction). ``native``
returns the model unchanged.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from slimtrain.compress.decompose import svd_decompose
from slimtrain.compress.filter_pruning import apply_channel_masks, filter_pruning_plan
from slimtrain.compress.magnitude import global_magnitude_prune

STRUCTURES = {
    "unstructured": "single conv/linear weights zeroed (level: sparsity); exported with zeros kept, or CSR",
    "filter": "whole conv filters removed (level: fraction of filters); exported with thinner layers",
    "lowrank": "conv layers factorized (level: fraction of rank removed); exported as factorized layers",
    "native": "the method's own form, as trained (SWD's target, TDLRT's tau, NN-BCD's tensor-train layers)",
}
"""Every structure a model is compressed and exported with (name → what its level means)."""


def compress_standard(
    model: nn.Module, structure: str, level: float, *, example_inputs: Any = None
) -> nn.Module:
    """Return a compressed copy of ``model`` at ``level`` of ``structure`` (``native``: ``model`` itself).

    Args:
        model: The trained model (not modified).
        structure: One of :data:`STRUCTURES`.
        level: Sparsity (``unstructured``), fraction of channels removed per group (``filter``) or fraction of
            the rank removed per layer (``lowrank``).
        example_inputs: An input batch (or tuple of inputs) to trace the model with; required by ``filter``.

    Returns:
        The compressed model: masked (same shapes) for ``unstructured`` and ``filter``, factorized for
        ``lowrank``.

    Raises:
        ValueError: For an unknown structure, or ``filter`` without ``example_inputs``.
    """
    if structure == "native":
        return model
    if structure == "unstructured":
        return global_magnitude_prune(model, level)
    if structure == "filter":
        if example_inputs is None:
            raise ValueError(
                "structure 'filter' needs example_inputs to trace the model's channel dependencies"
            )
        return apply_channel_masks(model, filter_pruning_plan(model, level, example_inputs))
    if structure == "lowrank":
        return svd_decompose(model, level)
    raise ValueError(f"unknown compression structure {structure!r}; valid: {', '.join(STRUCTURES)}")

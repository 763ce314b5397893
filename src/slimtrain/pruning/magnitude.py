"""Magnitude masks: the sparsity core with magnitude scores, global or per layer.

Exactly k entries are removed, ties broken by position (:mod:`slimtrain.pruning.selection`): the selection of
SWD's corrected mode (docs/swd.md#objective-and-selection and #corrected-defaults-and-faithful-flags "Full
sort ... every batch"), of the magnitude-pruning baselines (Han et al., "Learning both Weights and
Connections for Efficient Neural Networks", NeurIPS 2015), of NN-BCD's H_s and of post-training magnitude
pruning.
"""

from __future__ import annotations

from collections.abc import Mapping
from fractions import Fraction

from torch import Tensor

from slimtrain.pruning.scores import magnitude_scores
from slimtrain.pruning.selection import removal_count, removal_masks, smallest_k_mask, split_like

__all__ = ["per_tensor_magnitude_masks", "removal_count", "smallest_k_mask", "smallest_magnitude_masks"]


def smallest_magnitude_masks(tensors: Mapping[str, Tensor], n_remove: int) -> dict[str, Tensor]:
    """Keep masks that remove the ``n_remove`` smallest magnitudes over all tensors together.

    One global threshold across layers (docs/swd.md#objective-and-selection): the tensors are concatenated in
    mapping order and :func:`smallest_k_mask` picks exactly ``n_remove`` entries.

    Args:
        tensors: Named tensors (e.g. weights), in a fixed order; ties are broken by that order.
        n_remove: Number of entries to remove in total (see :func:`removal_count`).

    Returns:
        ``{name: keep_mask}`` with boolean masks shaped like the tensors (True = kept).

    Raises:
        ValueError: If ``tensors`` is empty or ``n_remove`` is out of range.
    """
    if not tensors:
        raise ValueError("smallest_magnitude_masks needs at least one tensor")
    # Scored in one concatenation (one abs kernel): this runs at every SWD training step.
    removed = split_like(smallest_k_mask(magnitude_scores(tensors), n_remove), tensors)
    # One inverted tensor per name, not views of one buffer: a saved mask stores only its own entries.
    return {name: ~r for name, r in removed.items()}


def per_tensor_magnitude_masks(
    tensors: Mapping[str, Tensor], sparsity: float | Fraction
) -> dict[str, Tensor]:
    """Keep masks that remove ⌊sparsity·n_i⌋ smallest magnitudes of each tensor separately.

    Args:
        tensors: Named tensors.
        sparsity: Fraction removed from each tensor, in [0, 1].

    Returns:
        ``{name: keep_mask}`` with boolean masks shaped like the tensors (True = kept).
    """
    scores = {name: magnitude_scores({name: t}).view(t.shape) for name, t in tensors.items()}
    if not scores:
        return {}
    return {name: ~removed for name, removed in removal_masks(scores, sparsity, scope="layerwise").items()}

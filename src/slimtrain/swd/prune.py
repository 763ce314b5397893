"""Final hard pruning at the SWD target, without fine-tuning (docs/swd.md#schedule-and-final-pruning)."""

from __future__ import annotations

from torch import Tensor, nn

from slimtrain.pruning.masks import MaskSet
from slimtrain.swd.selection import MagnitudeSelection, Selection

__all__ = ["prune_to_target"]


# Not under no_grad: there a computed (weight_norm) weight reads as frozen and would leave the population.
def prune_to_target(model: nn.Module, selection: Selection | float) -> dict[str, Tensor]:
    """Zero, in place, every entry the selection removes, and return the keep masks.

    The mask is recomputed from the current weights with the same rule as during training, then multiplied
    into every penalised tensor. Nothing else changes: no fine-tuning, no BatchNorm recalibration; evaluate
    the result in ``eval()`` mode with the stored statistics. Physical removal of channels is a separate
    export step. In the corrected unstructured mode, exactly ⌊(target/1000)·n⌋ weights of the population are
    zeroed. A computed weight (a ``weight_norm`` parametrization) is first made a plain parameter holding its
    current value (the parametrization removed, in place; docs/metrics.md#the-prunable-population), then
    zeroed: build the fine-tuning optimizer after this call.

    Args:
        model: The trained model.
        selection: A selection (see :mod:`slimtrain.swd.selection`, :mod:`slimtrain.swd.structured`), or a
            per-mille target as shorthand for ``MagnitudeSelection(target)`` (the prunable weights).

    Returns:
        ``{parameter name: boolean keep mask}`` for every penalised parameter (usable with
        :class:`slimtrain.pruning.MaskSet` to hold the zeros during further training).
    """
    if not hasattr(selection, "select"):
        selection = MagnitudeSelection(float(selection))
    masks = {s.name: ~s.removed for s in selection.select(model)}
    MaskSet(model, masks).apply_()
    return masks

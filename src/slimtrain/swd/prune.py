"""Final hard pruning at the SWD target, without fine-tuning (docs/swd.md#schedule-and-final-pruning)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from slimtrain.layers.prunable import make_plain
from slimtrain.swd.selection import MagnitudeSelection, Selection

__all__ = ["prune_to_target"]


@torch.no_grad()
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
    masks = {}
    for s in selection.select(model):
        keep = ~s.removed
        param = s.param
        if not isinstance(param, nn.Parameter):
            module_name, _, local = s.name.rpartition(".")
            module = model.get_submodule(module_name)
            make_plain(module, local)
            param = getattr(module, local)
        param.mul_(keep)
        masks[s.name] = keep
    return masks

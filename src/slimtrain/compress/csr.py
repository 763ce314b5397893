"""Storage of pruned linear layers in compressed sparse row form (:class:`slimtrain.layers.SparseLinear`)."""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from slimtrain.compress._modules import KEPT_CHANNELS_ATTR, copy_model, get_submodule, set_submodule
from slimtrain.layers.sparse import SparseLinear


def to_sparse_linear(
    model: nn.Module, layers: Iterable[str] | None = None, *, min_sparsity: float = 0.0
) -> nn.Module:
    """Return a copy of ``model`` with linear layers stored as :class:`SparseLinear`.

    Args:
        model: The (pruned) model, unchanged.
        layers: Names of the linears to convert; default every ``nn.Linear`` whose weight sparsity is at least
            ``min_sparsity``.
        min_sparsity: Minimum fraction of exact zeros for a layer to be converted when ``layers`` is None.

    Returns:
        The converted copy (same function).
    """
    result = copy_model(model)
    if layers is None:
        names = [
            n
            for n, m in result.named_modules()
            if isinstance(m, nn.Linear) and float((m.weight == 0).float().mean()) >= min_sparsity
        ]
    else:
        names = list(layers)
    for name in names:
        dense = get_submodule(result, name)
        if not isinstance(dense, nn.Linear):
            raise TypeError(f"layer {name!r} is a {type(dense).__name__}, not nn.Linear")
        sparse = SparseLinear.from_linear(dense)
        if hasattr(dense, KEPT_CHANNELS_ATTR):
            setattr(sparse, KEPT_CHANNELS_ATTR, getattr(dense, KEPT_CHANNELS_ATTR))
        set_submodule(result, name, sparse)
    return result

"""Storage of pruned linear layers in compressed sparse row form (:class:`slimtrain.layers.SparseLinear`)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from slimtrain._materialized import refuse_unmaterialized
from slimtrain._shared_params import refuse_shared
from slimtrain.compress._modules import KEPT_CHANNELS_ATTR, copy_model, get_submodule, set_submodule
from slimtrain.layers.factorized import FACTORIZED_DEPLOYMENT_LAYERS
from slimtrain.layers.replacement import LINEARS, Replacement, select_replaceable
from slimtrain.layers.sparse import SparseLinear


def _csr_refusal(linear: nn.Module) -> str | None:
    """Why a linear cannot run in CSR form: torch's CPU sparse product has no half-precision kernel."""
    weight = linear.weight
    if weight.device.type == "cpu" and weight.dtype in (torch.float16, torch.bfloat16):
        return (
            f"its weight is {weight.dtype} on the CPU, where torch's sparse CSR product has no kernel for "
            "that dtype; convert the model to float32 first (model.float()) or move it to a CUDA device"
        )
    return None


# The linears inside a low-rank layer stay dense: the export format records whole layers only.
_CSR = Replacement(
    "CSR storage", (nn.Linear,), LINEARS, "linear", _csr_refusal, inside=FACTORIZED_DEPLOYMENT_LAYERS
)


def to_sparse_linear(
    model: nn.Module, layers: Iterable[str] | None = None, *, min_sparsity: float = 0.0
) -> nn.Module:
    """Return a copy of ``model`` with linear layers stored as :class:`SparseLinear`.

    Layers are chosen by the rule of :mod:`slimtrain.layers.replacement` (docs/export.md, "Which layers are
    replaced"): by default, linears it does not allow (a subclass with its own ``forward``, the ``out_proj``
    of an ``nn.MultiheadAttention``, a parametrized weight) are kept dense and named in one
    :class:`~slimtrain.layers.replacement.LayersLeftDenseWarning`.

    Args:
        model: The (pruned) model, unchanged.
        layers: Names of the linears to convert; default every ``nn.Linear`` the rule allows whose weight
            sparsity is at least ``min_sparsity``.
        min_sparsity: Minimum fraction of exact zeros for a layer to be converted when ``layers`` is None.

    Returns:
        The converted copy (same function).

    Raises:
        UnsupportedModelError: A layer named in ``layers`` that the rule refuses (a half-precision weight on
            the CPU included), a model with no linear the rule allows, a selected linear whose weight is
            shared with another module (named), or a parameter or buffer without values (``meta`` device,
            lazy module).
        UnknownNameError: Names in ``layers`` that are not modules (a ``BadInputError`` and ``KeyError``).
    """
    refuse_unmaterialized(model, "to_sparse_linear")
    result = copy_model(model, "to_sparse_linear")
    names = select_replaceable(result, _CSR, layers)
    if layers is None:
        names = [
            n for n in names if float((get_submodule(result, n).weight == 0).float().mean()) >= min_sparsity
        ]
    refuse_shared(result, names, "CSR storage")
    for name in names:
        dense = get_submodule(result, name)
        sparse = SparseLinear.from_linear(dense)
        if not dense.weight.requires_grad:  # a frozen layer stays frozen in its sparse form
            sparse.requires_grad_(False)
        if hasattr(dense, KEPT_CHANNELS_ATTR):
            setattr(sparse, KEPT_CHANNELS_ATTR, getattr(dense, KEPT_CHANNELS_ATTR))
        set_submodule(result, name, sparse)
    return result

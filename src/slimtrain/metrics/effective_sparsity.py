"""Effective sparsity of ReLU MLPs: also count as zero every weight that cannot influence the output.

docs/metrics.md#populations (reported as "effective" next to "true" sparsity by the NN-BCD notebooks, Li et
al., arXiv:2303.06815): hidden unit j of layer i is dead if row j of W_i is all zero and its bias cannot make
it fire (its output is then ReLU(b_j) = 0), or if column j of W_{i+1} is all zero (its output is unused). The
dead units' rows and columns are zeroed and the rule is applied again until nothing changes.

A unit with a zero row but a positive bias emits a constant that could be folded into the next layer's
bias; that folding is not applied, so with biases the result is a lower bound of what an export can remove.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from slimtrain.metrics.counting import effective_weight
from slimtrain.metrics.sparse_weight import SparseWeightLayer


def effective_weight_masks(
    weights: Sequence[Tensor], biases: Sequence[Tensor | None] | None = None
) -> list[Tensor]:
    """Masks of the weights of a ReLU MLP that can still influence its output.

    Args:
        weights: ``W_1 … W_L``, each ``d_i × d_{i−1}`` (``nn.Linear`` layout), applied in order with a
            ReLU between consecutive layers.
        biases: Optional biases ``b_1 … b_L`` (``None`` entries for layers without bias).

    Returns:
        One boolean mask per weight: ``True`` where the weight is non-zero and its units are alive.

    Raises:
        ValueError: If consecutive shapes do not chain or the bias list has the wrong length/shape.
    """
    if not weights:
        raise ValueError("effective_weight_masks needs at least one weight matrix")
    biases = list(biases) if biases is not None else [None] * len(weights)
    if len(biases) != len(weights):
        raise ValueError(f"got {len(weights)} weights but {len(biases)} biases")
    for i, w in enumerate(weights):
        if w.dim() != 2:
            raise ValueError(f"weight {i} must be a matrix, got shape {tuple(w.shape)}")
        if i and w.shape[1] != weights[i - 1].shape[0]:
            raise ValueError(
                f"weight {i} has {w.shape[1]} inputs but weight {i - 1} has {weights[i - 1].shape[0]} outputs"
            )
        b = biases[i]
        if b is not None and b.shape != (w.shape[0],):
            raise ValueError(f"bias {i} has shape {tuple(b.shape)}, expected ({w.shape[0]},)")
    masks = [w.detach() != 0 for w in weights]
    # Units whose bias keeps them firing with a zero row are never dead-by-input.
    fires = [b.detach() > 0 if b is not None else None for b in biases]
    changed = True
    while changed:
        changed = False
        for i in range(len(masks) - 1):  # hidden layers: outputs of weight i, inputs of weight i+1
            no_input = ~masks[i].any(dim=1)
            if fires[i] is not None:
                no_input &= ~fires[i]
            unused = ~masks[i + 1].any(dim=0)
            dead = no_input | unused
            if bool(masks[i][dead].any() or masks[i + 1][:, dead].any()):
                masks[i][dead] = False
                masks[i + 1][:, dead] = False
                changed = True
    return masks


def mlp_linear_layers(model: nn.Module) -> list[nn.Module]:
    """The linear layers of a plain ReLU MLP, or an error naming what makes it not one.

    A plain ReLU MLP here is an ``nn.Sequential`` of linear layers (``nn.Linear`` or a sparse-storage
    :class:`~slimtrain.metrics.SparseWeightLayer` such as CSR), ``nn.ReLU``, ``nn.Flatten`` and
    ``nn.Identity``/``nn.Dropout`` modules, with exactly one ReLU between consecutive linear layers and no
    ReLU after the last one.
    """
    if not isinstance(model, nn.Sequential):
        raise ValueError(f"{type(model).__name__} is not an nn.Sequential ReLU MLP")
    linears: list[nn.Module] = []
    relus_since_last = 0
    for name, m in model.named_children():
        if isinstance(m, (nn.Linear, SparseWeightLayer)):
            if linears and relus_since_last != 1:
                raise ValueError(
                    f"layer {name!r}: expected exactly one ReLU before it, got {relus_since_last}"
                )
            linears.append(m)
            relus_since_last = 0
        elif isinstance(m, nn.ReLU):
            relus_since_last += 1
        elif not isinstance(m, (nn.Flatten, nn.Identity, nn.Dropout)):
            raise ValueError(f"layer {name!r} ({type(m).__name__}) is not allowed in a plain ReLU MLP")
    if not linears or relus_since_last:
        raise ValueError("a plain ReLU MLP starts with a Linear layer and ends with one (no final ReLU)")
    return linears


def is_relu_mlp(model: nn.Module) -> bool:
    """Whether :func:`mlp_linear_layers` accepts ``model``."""
    try:
        mlp_linear_layers(model)
    except ValueError:
        return False
    return True


def effective_sparsity(model: nn.Module) -> float:
    """Effective sparsity of the linear weights of a plain ReLU MLP (masks honoured), docs/metrics.md.

    Returns:
        ``1 − (live non-zero weights)/(all weights)`` over the Linear weights (the ``prunable`` population).

    Raises:
        ValueError: If ``model`` is not a plain ReLU MLP (see :func:`mlp_linear_layers`).
    """
    layers = mlp_linear_layers(model)
    weights = [effective_weight(m) for m in layers]
    masks = effective_weight_masks(weights, [m.bias for m in layers])
    total = sum(w.numel() for w in weights)
    return 1.0 - sum(int(torch.count_nonzero(k)) for k in masks) / total

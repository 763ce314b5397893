"""From a compressed model to the exported one: physically smaller, same function.

A method's ``compress`` returns the *compressed* model of a level: masked (zeros kept in dense tensors) for
unstructured and filter pruning, factorized for low rank. :func:`to_exported` turns it into the model that is
saved and deployed (spec metrics.md §6: latency is measured on this one):

- pruning re-parametrizations (``torch.nn.utils.prune``, ``parametrize``) are folded into plain weights;
- layers of rank-adaptive training (``slimtrain.lowrank``: TDLRT Tucker convs, DLRT low-rank linears and
  convs) are kept at their trained ranks, as the equivalent :mod:`slimtrain.compress.factorized` modules,
  never re-decomposed;
- structure ``filter``: every channel the compressed model has zeroed is physically removed
  (:func:`remove_zero_channels`), so the result computes the same function with thinner layers.

CSR storage of pruned linears (:func:`slimtrain.compress.to_sparse_linear`) is a further, optional step.

The channels to remove are read from the compressed model's weights, not recomputed from the level, so
any method's filter compression exports correctly as long as it zeroes whole channels.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

from slimtrain.compress._modules import copy_model, get_submodule, set_submodule
from slimtrain.compress.channel_groups import ChannelGroup
from slimtrain.compress.filter_pruning import ChannelPruningPlan, GroupSelection, remove_channels
from slimtrain.compress.masks import fold_masks
from slimtrain.compress.torch_pruning_adapter import coupled_channel_groups
from slimtrain.errors import ExportMismatchError, UnsupportedChannelFlowError
from slimtrain.layers import LowRankLinear, SVDConv2d, TuckerConv2d


def _nonzero_rows(tensor: torch.Tensor) -> torch.Tensor:
    """Per entry of dimension 0: whether any element of that slice is non-zero."""
    return tensor.detach().reshape(tensor.shape[0], -1).ne(0).any(dim=1).cpu()


def removable_channels(model: nn.Module, group: ChannelGroup) -> list[int]:
    """Root channels of ``group`` whose removal leaves ``model``'s function unchanged, by their weights.

    A channel is removable when every producer of it is zero (conv/linear output rows and biases, and
    BatchNorm γ and β — a BatchNorm without affine parameters never counts as zero) or when every consumer
    of it reads it with zero weights (the input columns of the consuming convs/linears; a group without
    consuming convs/linears counts as read).

    Args:
        model: The compressed (masked) model.
        group: A coupled channel group of ``model``.

    Returns:
        Sorted root channel indices.
    """
    produced = torch.zeros(group.size, dtype=torch.bool)  # some producer of the channel is non-zero
    consumed = torch.zeros(group.size, dtype=torch.bool)  # some consumer reads it with a non-zero weight
    has_consumer = False
    for member in group.members:
        module = get_submodule(model, member.module)
        idx = torch.tensor(member.indices)
        roots = torch.tensor(member.root_indices)
        if isinstance(module, _BatchNorm) or member.dim == "out":
            params = [getattr(module, p, None) for p in ("weight", "bias")]
            if isinstance(module, _BatchNorm) and not module.affine:
                produced[roots] = True
            for param in params:
                if isinstance(param, torch.Tensor):
                    produced[roots[_nonzero_rows(param[idx])]] = True
        elif isinstance(module, _ConvNd) and module.groups > 1:
            # A depthwise conv's input channel i only feeds its output channel i, a member of this group.
            continue
        else:
            has_consumer = True
            columns = module.weight.detach().transpose(0, 1)[idx]
            consumed[roots[_nonzero_rows(columns)]] = True
    if not has_consumer:  # nothing proves the channels unread
        consumed[:] = True
    return [i for i in range(group.size) if not produced[i] or not consumed[i]]


def remove_zero_channels(model: nn.Module, example_inputs: Any, *, round_to: int | None = None) -> nn.Module:
    """Return a copy of ``model`` with every removable channel (:func:`removable_channels`) removed.

    Groups are the coupled channel groups rooted at convs and linears (Torch-Pruning's dependency graph);
    groups reaching the model's output are never touched. With ``round_to``, each group keeps enough of its
    removable (zero) channels for its width to be a multiple of ``round_to`` (or its full width): rounding
    up keeps the function exactly, rounding down would not.

    Args:
        model: The compressed model (unchanged).
        example_inputs: An input batch to trace the model with and to verify the result on.
        round_to: Make every thinned group's width a multiple of this.

    Returns:
        The thinned copy (``model`` copied unchanged when no channel is removable).

    Raises:
        UnsupportedChannelFlowError: The model's channel flow cannot be followed (see
            :func:`slimtrain.compress.check_channel_flow`).
        RuntimeError: The thinned model would compute another function (from :func:`remove_channels`).
    """
    if round_to is not None and round_to < 1:
        raise ValueError(f"round_to must be a positive integer, got {round_to!r}")
    groups = coupled_channel_groups(model, example_inputs, root_types=(_ConvNd, nn.Linear))
    selections = []
    for group in groups:
        removable = removable_channels(model, group)
        kept = max(1, group.size - len(removable))
        if round_to is not None:
            kept = min(group.size, round_to * math.ceil(kept / round_to))
        pruned = removable[: group.size - kept]
        if pruned:
            selections.append(GroupSelection(group, tuple(pruned)))
    if not selections:
        return copy_model(model)
    return remove_channels(model, ChannelPruningPlan(tuple(selections)), example_inputs)


def _has_zero_output_channel(model: nn.Module) -> bool:
    return any(
        isinstance(m, (_ConvNd, nn.Linear)) and not bool(_nonzero_rows(m.weight).all())
        for m in model.modules()
    )


def _smaller_split(u: torch.Tensor, core: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``U S Vᵀ`` into (reduce, expand) = (S Vᵀ, U) or (Vᵀ, U S), the one of smaller inner rank."""
    if core.shape[0] <= core.shape[1]:
        return core @ v.T, u
    return v.T, u @ core


def _export_lowrank_layer(layer: nn.Module) -> nn.Module | None:
    """The :mod:`slimtrain.compress.factorized` module computing what a ``slimtrain.lowrank`` layer does."""
    from slimtrain.algebra.tucker import mode_product
    from slimtrain.lowrank import LowRankLinear as TrainLinear
    from slimtrain.lowrank import MatrixLowRankConv2d as TrainMatrixConv
    from slimtrain.lowrank import TuckerConv2d as TrainTuckerConv

    has_bias = layer.bias is not None
    with torch.no_grad():
        if isinstance(layer, TrainTuckerConv):
            u_out, u_in, u_h, u_w = (f.detach() for f in layer.factors)
            small = mode_product(mode_product(layer.core.detach(), u_h, 2), u_w, 3)
            out = TuckerConv2d(
                layer.in_channels, layer.out_channels, layer.kernel_size, small.shape[0], small.shape[1],
                stride=layer.stride, padding=layer.padding, dilation=layer.dilation, bias=has_bias,
            )  # fmt: skip
            out = out.to(device=small.device, dtype=small.dtype)
            out.project.weight.copy_(u_in.T[:, :, None, None])
            out.core.weight.copy_(small)
            out.expand.weight.copy_(u_out[:, :, None, None])
        elif isinstance(layer, TrainMatrixConv):
            u, v = (f.detach() for f in layer.factors)
            reduce, expand = _smaller_split(u, layer.core.detach(), v)
            out = SVDConv2d(
                layer.in_channels, layer.out_channels, layer.kernel_size, reduce.shape[0],
                stride=layer.stride, padding=layer.padding, dilation=layer.dilation, bias=has_bias,
            )  # fmt: skip
            out = out.to(device=u.device, dtype=u.dtype)
            out.reduce.weight.copy_(reduce.reshape(out.reduce.weight.shape))
            out.expand.weight.copy_(expand[:, :, None, None])
        elif isinstance(layer, TrainLinear):
            u, v = (f.detach() for f in layer.factors)
            reduce, expand = _smaller_split(u, layer.core.detach(), v)
            out = LowRankLinear(layer.in_features, layer.out_features, reduce.shape[0], bias=has_bias)
            out = out.to(device=u.device, dtype=u.dtype)
            out.reduce.weight.copy_(reduce)
            out.expand.weight.copy_(expand)
        else:
            return None
        if has_bias:
            out.expand.bias.copy_(layer.bias)
    return out


def export_lowrank_layers(model: nn.Module) -> nn.Module:
    """Return a copy of ``model`` with its ``slimtrain.lowrank`` training layers as export modules.

    TDLRT's Tucker convs become :class:`~slimtrain.layers.TuckerConv2d` (1×1 → k×k → 1×1, the trained
    ranks of the two channel modes; truncated spatial modes are multiplied back into the k×k core), DLRT's
    matrix layers become :class:`~slimtrain.layers.LowRankLinear` / :class:`~slimtrain.layers.SVDConv2d`
    at the smaller of their two ranks. The function is unchanged (up to rounding).
    """
    from slimtrain.lowrank import TuckerFactorizedLayer

    result = copy_model(model)
    for name, module in list(result.named_modules()):
        if isinstance(module, TuckerFactorizedLayer):
            converted = _export_lowrank_layer(module)
            if converted is not None:
                set_submodule(result, name, converted)
    return result


def to_exported(
    compressed: nn.Module,
    structure: str,
    example_inputs: Any,
    *,
    round_to: int | None = None,
) -> nn.Module:
    """Return the exported form of a compressed model (see the module docstring).

    Args:
        compressed: The output of a method's ``compress`` at one level (unchanged).
        structure: The structure it was compressed with: ``unstructured``, ``filter``, ``lowrank`` or
            ``native`` (the trained model itself; zeroed channels are removed when its channel flow allows).
        example_inputs: An input batch, used to trace channel dependencies and verify channel removal.
        round_to: ``filter``/``native``: round thinned widths up to a multiple of this (zero channels kept).

    Returns:
        The exported model, in eval mode.

    Raises:
        UnsupportedChannelFlowError: ``filter`` on a model whose channel flow cannot be followed.
        ValueError: An unknown structure, or ``round_to`` with a structure that removes no channels.
    """
    if structure not in ("unstructured", "filter", "lowrank", "native"):
        raise ValueError(f"unknown structure {structure!r}; valid: unstructured, filter, lowrank, native")
    if round_to is not None and structure not in ("filter", "native"):
        raise ValueError(f"round_to applies to channel removal (filter, native), not to {structure!r}")
    model = export_lowrank_layers(fold_masks(compressed)).eval()
    if structure == "filter":
        model = remove_zero_channels(model, example_inputs, round_to=round_to)
    elif structure == "native" and _has_zero_output_channel(model):
        try:
            model = remove_zero_channels(model, example_inputs, round_to=round_to)
        except UnsupportedChannelFlowError as error:
            warnings.warn(f"zeroed channels are kept in the exported model: {error}", stacklevel=2)
    return model.eval()


def check_same_outputs(
    compressed: nn.Module,
    exported: nn.Module,
    inputs: torch.Tensor,
    *,
    rtol: float = 1e-4,
    atol: float = 1e-5,
) -> float:
    """Check that ``exported`` computes ``compressed``'s outputs on ``inputs`` (both in eval mode).

    Args:
        compressed: The compressed (reference) model.
        exported: Its exported form.
        inputs: A batch of real inputs.
        rtol: Relative tolerance.
        atol: Absolute tolerance, scaled by max(1, max |reference output|).

    Returns:
        The largest absolute difference.

    Raises:
        ExportMismatchError: If the shapes differ or an output differs beyond the tolerance.
    """
    compressed.eval()
    exported.eval()
    with torch.no_grad():
        expected, actual = compressed(inputs), exported(inputs)
    if expected.shape != actual.shape:
        raise ExportMismatchError(
            f"exported model outputs shape {tuple(actual.shape)}, "
            f"the compressed model {tuple(expected.shape)}"
        )
    error = float((expected - actual).abs().max()) if expected.numel() else 0.0
    scale = max(1.0, float(expected.abs().max())) if expected.numel() else 1.0
    if not torch.allclose(actual, expected, rtol=rtol, atol=atol * scale):
        raise ExportMismatchError(
            f"exported model's outputs differ from the compressed model's: max abs error {error:.3g} "
            f"(tolerance rtol={rtol}, atol={atol * scale:.3g})"
        )
    return error

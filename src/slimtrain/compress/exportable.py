"""From a compressed model to the exported one: physically smaller, same function.

A method's ``compress`` returns the *compressed* model of a level: masked (zeros kept in dense tensors) for
unstructured and filter pruning, factorized for low rank. :func:`to_exported` turns it into the model that is
saved and deployed (docs/metrics.md#latency: latency is measured on this one):

- pruning re-parametrizations (``torch.nn.utils.prune``, ``parametrize``) are folded into plain weights;
- training-time factorized layers (TDLRT Tucker convs, DLRT matrix layers) become their deployment form at
  their trained ranks (``to_deployment``), never re-decomposed;
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

from slimtrain._model_io import ModelInputs, Tolerance, call_model, compare_outputs, eval_mode
from slimtrain._shared_params import refuse_untied, shared_parameter_groups
from slimtrain._wrappers import unwrap_model
from slimtrain.compress._modules import copy_model, get_submodule, set_submodule
from slimtrain.compress.channel_groups import ChannelGroup, weight_channel_axis
from slimtrain.compress.filter_pruning import ChannelPruningPlan, GroupSelection, remove_channels
from slimtrain.compress.masks import fold_masks
from slimtrain.compress.torch_pruning_adapter import coupled_channel_groups
from slimtrain.errors import UnsupportedChannelFlowError
from slimtrain.layers import TrainingLayer
from slimtrain.layers.factorized import FACTORIZED_DEPLOYMENT_LAYERS


class ChannelsKeptWarning(UserWarning):
    """A ``native`` export kept the zeroed channels: their removal was refused (the message says why)."""


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
    model = unwrap_model(model)  # groups name the layers of the model inside a wrapper
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
            for pname, param in zip(("weight", "bias"), params, strict=True):
                if isinstance(param, torch.Tensor):
                    axis = weight_channel_axis(module, "out") if pname == "weight" else 0
                    produced[roots[_nonzero_rows(param.movedim(axis, 0)[idx])]] = True
        elif isinstance(module, _ConvNd) and module.groups > 1:
            # A depthwise conv's input channel i only feeds its output channel i, a member of this group.
            continue
        else:
            has_consumer = True
            columns = module.weight.detach().movedim(weight_channel_axis(module, "in"), 0)[idx]
            consumed[roots[_nonzero_rows(columns)]] = True
    if not has_consumer:  # nothing proves the channels unread
        consumed[:] = True
    return [i for i in range(group.size) if not produced[i] or not consumed[i]]


def remove_zero_channels(model: nn.Module, example_inputs: Any, *, round_to: int | None = None) -> nn.Module:
    """Return a copy of ``model`` with every removable channel (:func:`removable_channels`) removed.

    Groups are the coupled channel groups rooted at convs and linears (Torch-Pruning's dependency graph);
    groups reaching the model's output are never touched, nor those with a channel inside a factorized layer
    (:data:`~slimtrain.layers.factorized.FACTORIZED_DEPLOYMENT_LAYERS`): its ranks and widths are its
    recorded configuration, which a removed channel would contradict (the export could not be loaded again).
    With ``round_to``, each group keeps enough of its removable (zero) channels for its width to be a
    multiple of ``round_to`` (or its full width): rounding up keeps the function exactly, rounding down would
    not.

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
    factorized = [
        f"{name}."
        for name, m in unwrap_model(model).named_modules()
        if isinstance(m, FACTORIZED_DEPLOYMENT_LAYERS)
    ]
    selections = []
    for group in groups:
        if any(member.module.startswith(tuple(factorized)) for member in group.members):
            continue
        removable = removable_channels(model, group)
        kept = max(1, group.size - len(removable))
        if round_to is not None:
            kept = min(group.size, round_to * math.ceil(kept / round_to))
        pruned = removable[: group.size - kept]
        if pruned:
            selections.append(GroupSelection(group, tuple(pruned)))
    if not selections:
        return copy_model(model, "remove_zero_channels")
    return remove_channels(model, ChannelPruningPlan(tuple(selections)), example_inputs)


def _has_zero_output_channel(model: nn.Module) -> bool:
    return any(
        isinstance(m, (_ConvNd, nn.Linear))
        and not bool(_nonzero_rows(m.weight.movedim(weight_channel_axis(m, "out"), 0)).all())
        for m in model.modules()
    )


def export_lowrank_layers(model: nn.Module) -> nn.Module:
    """Return a copy of ``model`` with every training-time factorized layer in its deployment form.

    A layer with a ``to_deployment()`` method (:class:`slimtrain.layers.TrainingLayer`: TDLRT's Tucker convs,
    DLRT's matrix layers) is replaced by what it returns — :class:`~slimtrain.layers.TuckerConv2d`,
    :class:`~slimtrain.layers.SVDConv2d` or :class:`~slimtrain.layers.LowRankLinear` at the trained ranks.
    The function is unchanged (up to rounding).
    """
    result = copy_model(model, "export_lowrank_layers")
    for name, module in list(result.named_modules()):
        if isinstance(module, TrainingLayer):
            set_submodule(result, name, module.to_deployment())
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
        compressed: The output of a method's ``compress`` at one level (unchanged); a
            ``DistributedDataParallel`` or ``torch.compile`` wrapper is unwrapped.
        structure: The structure it was compressed with: ``unstructured``, ``filter``, ``lowrank`` or
            ``native`` (the trained model itself; zeroed channels are removed when its channel flow allows).
        example_inputs: An input batch, used to trace channel dependencies and verify channel removal.
        round_to: ``filter``/``native``: round thinned widths up to a multiple of this (zero channels kept).

    Returns:
        The exported model, in eval mode.

    Raises:
        UnsupportedChannelFlowError: ``filter`` on a model whose channel flow cannot be followed.
        UnsupportedModelError: The export would untie a shared (tied) parameter (channels removed from one
            of its layers); shared parameters stay one tensor otherwise.
        ValueError: An unknown structure, or ``round_to`` with a structure that removes no channels.
    """
    if structure not in ("unstructured", "filter", "lowrank", "native"):
        raise ValueError(f"unknown structure {structure!r}; valid: unstructured, filter, lowrank, native")
    if round_to is not None and structure not in ("filter", "native"):
        raise ValueError(f"round_to applies to channel removal (filter, native), not to {structure!r}")
    folded = fold_masks(unwrap_model(compressed))  # the exported model is the user's, not its wrapper
    shared = shared_parameter_groups(folded)
    model = export_lowrank_layers(folded).eval()
    if structure == "filter":
        model = remove_zero_channels(model, example_inputs, round_to=round_to)
    elif structure == "native" and _has_zero_output_channel(model):
        try:
            model = remove_zero_channels(model, example_inputs, round_to=round_to)
        except UnsupportedChannelFlowError as error:
            warnings.warn(
                f"zeroed channels are kept in the exported model: {error}", ChannelsKeptWarning, stacklevel=2
            )
    refuse_untied(shared, model, f"exporting ({structure})")
    return model.eval()


def check_same_outputs(
    compressed: nn.Module,
    exported: nn.Module,
    inputs: ModelInputs,
    *,
    rtol: float = 1e-4,
    atol: float = 1e-5,
) -> float:
    """Check that ``exported`` computes ``compressed``'s outputs on ``inputs``, both in eval mode.

    Every sub-module's training flag is restored after the check.

    Outputs are compared leaf by leaf as pytrees: a tensor, or tuples, lists, dicts, dataclasses and Hugging
    Face ``ModelOutput`` objects of tensors (docs/export.md#model-inputs-and-outputs).

    Args:
        compressed: The compressed (reference) model.
        exported: Its exported form.
        inputs: A batch of real inputs: a tensor, a tuple of positional inputs or a dict of keyword inputs.
        rtol: Relative tolerance.
        atol: Absolute tolerance, scaled by max(1, max |reference output|) per output tensor.

    Returns:
        The largest absolute difference over every output tensor.

    Raises:
        ExportMismatchError: If the output structures or shapes differ or an output differs beyond the
            tolerance; the message names the output.
        UnsupportedModelError: If the compressed model's output holds no tensor, so nothing is compared.
    """
    with eval_mode(compressed), eval_mode(exported), torch.no_grad():
        expected, actual = call_model(compressed, inputs), call_model(exported, inputs)
    return compare_outputs(expected, actual, Tolerance(rtol=rtol, atol=atol))

"""Structured pruning: uniform per-layer L1 filter pruning over coupled channel groups.

For every channel group (:mod:`slimtrain.compress.channel_groups`) the channels are ranked by their L1 norm,
summed over the output-channel weights of every conv/linear in the group, and round(fraction·n) channels are
removed (PyTorch ``ln_structured`` rounding; SFW filter evaluation, Zimmer et al., arXiv:2205.11921,
docs/sfw.md#evaluation-protocol). Ties go to the lower index.

A level is applied either as **masks** (:func:`apply_channel_masks`: the pruned channels' filters, biases and
BatchNorm γ/β and the consumers' input weights are zeroed) or **physically** (:func:`remove_channels`).
Because the consumers' inputs are masked too, both compute the same function. The SFW reference code masks
only the conv weight, leaving the BatchNorm shift β as a constant in the "pruned" channel; that variant
cannot be exported as a smaller model and is not reproduced here.

Plans and masks name the layers of the unwrapped model (:mod:`slimtrain._wrappers`): a plan computed on a
``DataParallel`` or ``torch.compile`` wrapper applies to ``model.module`` / the wrapper alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd
from torch.nn.utils import parametrize, prune

from slimtrain._model_io import ModelInputs, call_model, compare_outputs, eval_mode
from slimtrain._shared_params import refuse_shared
from slimtrain._wrappers import refuse_data_parallel, unwrap_model
from slimtrain.compress._modules import KEPT_CHANNELS_ATTR, copy_model, get_submodule
from slimtrain.compress.channel_groups import ChannelGroup, ChannelSlice, weight_channel_axis
from slimtrain.compress.masks import apply_masks
from slimtrain.compress.torch_pruning_adapter import coupled_channel_groups, remove_channels_in_place
from slimtrain.errors import ExportMismatchError, UnsupportedChannelFlowError, UnsupportedModelError, one_line
from slimtrain.pruning.selection import smallest_k_mask


@dataclass(frozen=True)
class GroupSelection:
    """The channels removed from one group.

    Attributes:
        group: The coupled channel group.
        pruned: Root channel indices removed, sorted.
    """

    group: ChannelGroup
    pruned: tuple[int, ...]

    @property
    def slices(self) -> tuple[ChannelSlice, ...]:
        """The entries of every member layer that are removed."""
        return self.group.restricted_to(frozenset(self.pruned))


@dataclass(frozen=True)
class ChannelPruningPlan:
    """A structured compression level: the channels removed from every group.

    Attributes:
        selections: One selection per prunable group, in module order.
    """

    selections: tuple[GroupSelection, ...]


def channels_kept(size: int, fraction: float, round_to: int | None = None) -> int:
    """Return the channels a group of ``size`` keeps: size − round(fraction·size), then rounded.

    With ``round_to`` the count is rounded to the nearest multiple of it (at least ``round_to``, at most
    ``size``). At least one channel is always kept.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction!r}")
    kept = size - round(fraction * size)
    if round_to is not None:
        if round_to < 1:
            raise ValueError(f"round_to must be a positive integer, got {round_to!r}")
        kept = min(size, max(round_to, round_to * round(kept / round_to)))
    return max(1, kept)


def group_l1_scores(model: nn.Module, group: ChannelGroup) -> torch.Tensor:
    """L1 norm of each root channel, summed over the output-channel weights of the group's convs/linears."""
    model = unwrap_model(model)
    scores = torch.zeros(group.size, dtype=torch.float64)
    for member in group.members:
        module = get_submodule(model, member.module)
        if member.dim != "out" or not isinstance(module, (_ConvNd, nn.Linear)):
            continue
        weight = module.weight.detach().movedim(weight_channel_axis(module, "out"), 0)
        norms = weight.abs().flatten(1).sum(1).double().cpu()
        scores.index_add_(0, torch.tensor(member.root_indices), norms[list(member.indices)])
    return scores


def filter_pruning_plan(
    model: nn.Module,
    fraction: float,
    example_inputs: Any,
    *,
    include_linear: bool = False,
    round_to: int | None = None,
    ignored_layers: Sequence[str] = (),
) -> ChannelPruningPlan:
    """Plan uniform L1 filter pruning: every group loses the same fraction of its channels.

    Args:
        model: The trained model (unchanged).
        fraction: Fraction of the channels removed from every group.
        example_inputs: An input tensor (or tuple of inputs) to trace the model with.
        include_linear: Also prune the output features of hidden linear layers (needed for MLPs).
        round_to: Round each group's kept channel count to a multiple of this (hardware-friendly widths).
        ignored_layers: Names of layers whose output channels are kept.

    Returns:
        The plan; apply it with :func:`apply_channel_masks` or :func:`remove_channels`.

    Raises:
        UnsupportedChannelFlowError: The model has zero-padding shortcuts, recurrent layers or other channel
            flow the dependency graph cannot follow.
        UnsupportedModelError: ``fraction > 0`` and no channel group can be pruned (no conv, or every conv
            feeds a model output or a layer's input side fed by a model input), or a group touches a
            re-parametrized layer (``weight_norm``, ``prune``); the message names the layers.
    """
    model = unwrap_model(model)  # the plan names the layers of the user's model
    root_types: tuple[type[nn.Module], ...] = (_ConvNd, nn.Linear) if include_linear else (_ConvNd,)
    groups = coupled_channel_groups(
        model, example_inputs, root_types=root_types, ignored_layers=ignored_layers
    )
    if not groups and fraction > 0:
        _refuse_nothing_prunable(model, root_types)
    _refuse_reparametrized(model, groups)
    selections = []
    for group in groups:
        removed = group.size - channels_kept(group.size, fraction, round_to)
        # The core's exact selection: the smallest L1 scores, ties removing the lower channel index first.
        chosen = smallest_k_mask(group_l1_scores(model, group), removed).nonzero().flatten()
        selections.append(GroupSelection(group, tuple(int(i) for i in chosen)))
    return ChannelPruningPlan(tuple(selections))


def _refuse_nothing_prunable(model: nn.Module, root_types: tuple[type[nn.Module], ...]) -> None:
    """Refuse a level that would remove nothing: the model would come back unchanged, not pruned."""
    kinds = "conv or linear layer" if nn.Linear in root_types else "conv layer"
    roots = [f"{n!r} ({type(m).__qualname__})" for n, m in model.named_modules() if isinstance(m, root_types)]
    if roots:
        shown = ", ".join(roots[:6]) + (", ..." if len(roots) > 6 else "")
        why = (
            f"the output channels of every {kinds} ({shown}) are channels of a model output, of a model "
            "input (a layer applied to its own output) or of an ignored layer"
        )
    else:
        why = f"{type(model).__qualname__} has no {kinds}"
    hint = ""
    if nn.Linear not in root_types and any(isinstance(m, nn.Linear) for m in model.modules()):
        hint = "pass include_linear=True to remove the output features of hidden linear layers, or "
    raise UnsupportedModelError(
        f"filter pruning refused: no channel can be removed, since {why}; {hint}prune it unstructured "
        "(global_magnitude_prune) or factorize it (svd_decompose) instead"
    )


def _refuse_reparametrized(model: nn.Module, groups: Sequence[ChannelGroup]) -> None:
    """Refuse groups touching a layer whose weight is computed (``parametrize``, ``prune``).

    Its channels are not entries of a stored tensor (weight norm divides by a norm over each row).
    """
    for group in groups:
        for member in group.members:
            module = get_submodule(model, member.module)
            if parametrize.is_parametrized(module) or prune.is_pruned(module):
                raise UnsupportedModelError(
                    f"filter pruning refused: layer {member.module!r} ({type(module).__qualname__}) "
                    "computes its weight through a re-parametrization (torch.nn.utils.parametrize, such as "
                    "weight_norm, or torch.nn.utils.prune), so its channels cannot be masked or removed in "
                    "the stored tensors; fold it into a plain weight first (slimtrain.compress.fold_masks"
                    "(model) keeps its current value)"
                )


def channel_masks(model: nn.Module, plan: ChannelPruningPlan) -> dict[str, torch.Tensor]:
    """Return the parameter keep-masks that realise ``plan`` on ``model`` (see module docstring).

    Named by the unwrapped model, as the plan.
    """
    model = unwrap_model(model)
    masks: dict[str, torch.Tensor] = {}

    def drop(name: str, param: torch.Tensor, axis: int, indices: list[int]) -> None:
        mask = masks.setdefault(name, torch.ones_like(param, dtype=torch.bool))
        mask.index_fill_(axis, torch.tensor(indices, device=mask.device), False)

    for selection in plan.selections:
        for s in selection.slices:
            module = get_submodule(model, s.module)
            idx = list(s.indices)
            prefix = f"{s.module}." if s.module else ""
            if isinstance(module, _BatchNorm) or s.dim == "out":
                for pname in ("weight", "bias"):
                    param = getattr(module, pname, None)
                    if isinstance(param, nn.Parameter):
                        axis = weight_channel_axis(module, "out") if pname == "weight" else 0
                        drop(prefix + pname, param, axis, idx)
            elif isinstance(module, _ConvNd) and module.groups > 1:
                continue  # depthwise conv: its input channel i only feeds output channel i, masked as "out"
            else:
                drop(prefix + "weight", module.weight, weight_channel_axis(module, "in"), idx)
    return masks


def apply_channel_masks(model: nn.Module, plan: ChannelPruningPlan) -> nn.Module:
    """Return a copy of ``model`` with the plan's channels zeroed (same function as after removal).

    Raises:
        UnsupportedModelError: The plan touches a layer whose parameter is shared (tied) with another module:
            its channels cannot be removed consistently; the message names both module paths. Or ``model`` is
            a data-parallel wrapper: pass ``model.module`` (the same plan applies).
    """
    refuse_data_parallel(model, "apply_channel_masks")
    touched = sorted({s.module for selection in plan.selections for s in selection.slices})
    refuse_shared(unwrap_model(model), touched, "filter pruning")
    return apply_masks(model, channel_masks(model, plan))


def _outputs(model: nn.Module, example_inputs: ModelInputs) -> Any:
    with eval_mode(model), torch.no_grad():
        return call_model(model, example_inputs)


def remove_channels(
    model: nn.Module, plan: ChannelPruningPlan, example_inputs: ModelInputs, *, verify: bool = True
) -> nn.Module:
    """Return a copy of ``model`` with the plan's channels physically removed.

    Every thinned layer gets a ``slimtrain_kept_channels`` attribute (kept indices relative to ``model``'s
    own kept channels composed with any earlier thinning) that :func:`save_exported` records.

    Args:
        model: The trained (unmasked or masked) model, unchanged; not a data-parallel wrapper (pass
            ``model.module``: a plan computed on the wrapper applies to it).
        plan: A plan computed on ``model`` (or a model of the same architecture).
        example_inputs: Input(s) to trace the model with and to verify the result on: a tensor, a tuple of
            positional inputs or a dict of keyword inputs (docs/export.md#model-inputs-and-outputs).
        verify: Check, in eval mode on ``example_inputs``, that the thinned model computes the same outputs
            as :func:`apply_channel_masks`, every output tensor compared (relative tolerance 1e-4).

    Returns:
        The thinned copy.

    Raises:
        ExportMismatchError: If verification finds an output that differs (the thinned model is never
            returned then).
        UnsupportedModelError: If ``verify`` and the model's output holds no tensor to compare.
        UnsupportedChannelFlowError: If ``verify`` and the thinned model fails on ``example_inputs`` (a
            channel flow the dependency graph does not follow).
    """
    result = copy_model(model, "remove_channels")
    # Thinned inside its wrapper (torch.compile), verified unwrapped: the plan names the user's model.
    model, thinned = unwrap_model(model), unwrap_model(result)
    originals = {
        (s.module, s.dim): _size(get_submodule(model, s.module), s.dim)
        for selection in plan.selections
        for s in selection.slices
    }
    remove_channels_in_place(thinned, example_inputs, [(s.group.root, s.pruned) for s in plan.selections])
    removed: dict[tuple[str, str], set[int]] = {}
    for selection in plan.selections:
        for s in selection.slices:
            removed.setdefault((s.module, s.dim), set()).update(s.indices)
    for (name, dim), indices in removed.items():
        module = get_submodule(thinned, name)
        kept_now = [i for i in range(originals[(name, dim)]) if i not in indices]
        record = dict(getattr(module, KEPT_CHANNELS_ATTR, {}))
        previous = record.get(dim)
        record[dim] = [previous[i] for i in kept_now] if previous is not None else kept_now
        setattr(module, KEPT_CHANNELS_ATTR, record)
    if verify:
        expected = _outputs(apply_channel_masks(model, plan), example_inputs)
        try:
            actual = _outputs(thinned, example_inputs)
        except RuntimeError as error:
            raise UnsupportedChannelFlowError(
                "channel removal produced a model that fails on the example input, through a channel flow "
                "the dependency graph does not follow (such as a model input added to a layer's output): "
                f"{one_line(error)}"
            ) from error
        try:
            compare_outputs(expected, actual)
        except ExportMismatchError as error:
            raise ExportMismatchError(
                f"channel removal changed the model's function: the thinned model's {error}"
            ) from error
    return result


def _size(module: nn.Module, dim: str) -> int:
    if isinstance(module, _BatchNorm):
        return module.num_features
    if isinstance(module, nn.Linear):
        return module.out_features if dim == "out" else module.in_features
    return module.out_channels if dim == "out" else module.in_channels

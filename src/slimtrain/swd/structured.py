"""Structured SWD selection: channels gated by BatchNorm γ under a parameter budget (docs/swd.md).

Tessier et al., arXiv:2011.10520 (structured and "structuredF" pruning).

The model is read unwrapped (:mod:`slimtrain._wrappers`): gates and selected parameters are named by the
model inside a ``DataParallel`` or ``torch.compile`` wrapper.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import torch
from torch import Tensor, nn

from slimtrain._wrappers import unwrap_model
from slimtrain.errors import BadInputError
from slimtrain.swd.budget import (
    Bisection,
    CountsOnDevice,
    budget_threshold,
    budget_threshold_tensor,
    parameter_budget,
    refuse_unreachable,
)
from slimtrain.swd.channels import ChannelGraph, GateCompare
from slimtrain.swd.gate_groups import GroupGates
from slimtrain.swd.selection import Selected

__all__ = ["ChannelModelName", "ChannelSelection", "build_channel_model"]

ChannelModelName = Literal["groups", "reference"]


def build_channel_model(
    model: nn.Module,
    channel_model: ChannelModelName,
    example_inputs: Any = None,
    what: str = "structured SWD",
) -> GroupGates | ChannelGraph:
    """Build the channel model of ``model``.

    ``"groups"``: DepGraph's coupled groups (:class:`GroupGates`; needs ``example_inputs``); ``"reference"``:
    the reference's traced gates (:class:`ChannelGraph`). Layers of gated channels with frozen parameters are
    refused (``what`` names the caller).

    Raises:
        BadInputError: An unknown ``channel_model``, or ``"groups"`` without ``example_inputs``.
    """
    model = unwrap_model(model)
    if channel_model == "reference":
        graph: GroupGates | ChannelGraph = ChannelGraph.from_model(model)
    elif channel_model == "groups":
        if example_inputs is None:
            raise BadInputError(
                f"{what} with channel_model='groups' (the default) traces the model's channel groups and "
                "needs example_inputs (a small input batch); pass example_inputs=..., or "
                "channel_model='reference' for the reference's traced gates"
            )
        graph = GroupGates.from_model(model, example_inputs)
    else:
        raise BadInputError(f"channel_model must be 'groups' or 'reference', got {channel_model!r}")
    graph.refuse_frozen(model, what)
    return graph


class ChannelSelection:
    """Selects whole channels: γ and β of gate channels with |γ| below the budget threshold.

    At every call the threshold is re-derived from the current γ by :func:`budget_threshold`, so the
    selected channels are those that pruning to the budget now would remove. With the default channel model
    and bisection, :meth:`select` and :meth:`keep_masks` find it on the device
    (:func:`~slimtrain.swd.budget.budget_threshold_tensor`): a training step that selects never waits for
    the host. With
    ``penalize_filters=True`` (the reference ``structuredF``) the convolution slices W[o, i] whose output
    channel o or input channel i is gated off are selected too (biases of gated-off outputs included),
    shortcut convolutions included.

    Two channel models (docs/swd.md#structured-swd-and-the-parameter-budget): ``"groups"`` (default) gates
    DepGraph's coupled channel groups holding a BatchNorm (:class:`~slimtrain.swd.GroupGates`), counted as the
    export removes them; ``"reference"`` is the reference's traced gates and analytic count
    (:class:`~slimtrain.swd.ChannelGraph`).

    Args:
        model: The model; its channel model is built once here (unless ``graph`` is given).
        target: Per-mille of parameters removed, in [0, 1000); the budget is in parameters.
        penalize_filters: Also select the conv filters adjacent to gated-off channels.
        bisection: ``"corrected"`` (default) or ``"reference"``, see :func:`budget_threshold`.
        gate_compare: Count comparison, ``"ge"`` (corrected, same as the mask) or ``"gt"`` (the reference's
            mixed rule: the mask keeps |γ| ≥ th while the count keeps |γ| > th).
        gates: ``"reference"`` only: BatchNorm names to use as gates instead of the automatic rule of
            :class:`ChannelGraph`.
        graph: The model's channel model (a :class:`ChannelGraph` or :class:`GroupGates`), built before (then
            it is not built again; ``gates`` must be ``None``; ``channel_model`` is ignored): for callers that
            select channels many times on one model.
        channel_model: ``"groups"`` (default) or ``"reference"``.
        example_inputs: An input batch to trace the model with; required by ``"groups"``.

    Raises:
        BadInputError: ``channel_model="groups"`` without ``example_inputs``.
        UnsupportedModelError: With the ``"corrected"`` bisection, a target no threshold reaches (what no
            gate can remove exceeds the budget; it does not depend on γ).
        UnsupportedChannelFlowError: ``"groups"`` on a model whose channels DepGraph cannot follow (e.g. a
            zero-padding "option A" shortcut; the message names it).
    """

    def __init__(
        self,
        model: nn.Module,
        target: float,
        penalize_filters: bool = False,
        bisection: Bisection = "corrected",
        gate_compare: GateCompare = "ge",
        gates: Iterable[str] | None = None,
        graph: ChannelGraph | GroupGates | None = None,
        *,
        channel_model: ChannelModelName = "groups",
        example_inputs: Any = None,
    ) -> None:
        if gate_compare not in ("ge", "gt"):
            raise ValueError(f"gate_compare must be 'ge' or 'gt', got {gate_compare!r}")
        if graph is not None and gates is not None:
            raise ValueError("give either gates or a traced graph, not both")
        model = unwrap_model(model)
        parameter_budget(model, target)
        if graph is not None:
            self.graph = graph
            graph.refuse_frozen(model, "structured SWD")
        elif gates is not None:
            if channel_model != "reference":
                raise BadInputError("gates= chooses the reference's gates: pass channel_model='reference'")
            self.graph = ChannelGraph.from_model(model, gates)
            self.graph.refuse_frozen(model, "structured SWD")
        else:
            self.graph = build_channel_model(model, channel_model, example_inputs)
        if gate_compare == "gt" and isinstance(self.graph, GroupGates):
            # The mask keeps scores >= th: counting > th would miss what the export keeps.
            raise BadInputError(
                "gate_compare='gt' reproduces the fx tracer's count (the reference's mixed rule); use it "
                "with channel_model='reference'"
            )
        if bisection == "corrected":
            refuse_unreachable(self.graph, model, target, gate_compare)
        self.target = target
        self.penalize_filters = penalize_filters
        self.bisection = bisection
        self.gate_compare = gate_compare

    def threshold(self, model: nn.Module) -> float:
        """Current budget threshold on |γ|."""
        model = unwrap_model(model)
        return budget_threshold(self.graph, model, self.target, self.bisection, self.gate_compare)

    def _threshold_on_device(self, model: nn.Module) -> float | Tensor:
        """:meth:`threshold`, left on the device where the channel model counts there."""
        model = unwrap_model(model)
        if self.bisection == "corrected" and isinstance(self.graph, CountsOnDevice):
            return budget_threshold_tensor(self.graph, model, self.target, self.gate_compare)
        return self.threshold(model)

    def keep_masks(self, model: nn.Module) -> dict[str, Tensor]:
        """Kept channels of every gate at the current threshold (the mask always keeps |γ| ≥ th).

        Keyed by gate BatchNorm (``"reference"``) or by group root layer (``"groups"``).
        """
        model = unwrap_model(model)
        if isinstance(self.graph, GroupGates):
            kept = self.graph.keep_masks(model, self._threshold_on_device(model), "ge")
            return {g.root: k for g, k in zip(self.graph.groups, kept, strict=True)}
        return self.graph.gate_keep_masks(model, self.threshold(model), "ge")

    def select(self, model: nn.Module) -> list[Selected]:
        """Selected entries of every penalised parameter, from the current γ (detached)."""
        model = unwrap_model(model)
        if isinstance(self.graph, GroupGates):
            which = "all" if self.penalize_filters else "gates"
            removed = self.graph.removal_masks(model, self._threshold_on_device(model), "ge", which)
            return [Selected(name, model.get_parameter(name), mask) for name, mask in removed.items()]
        keep = self.keep_masks(model)
        selected = []
        for gate in self.graph.gates:
            norm = model.get_submodule(gate)
            selected.append(Selected(f"{gate}.weight", norm.weight, ~keep[gate]))
            selected.append(Selected(f"{gate}.bias", norm.bias, ~keep[gate]))
        if self.penalize_filters:
            for name, (source_in, source_out) in self.graph.convs.items():
                live_in = self.graph.live_channels(source_in, keep)
                live_out = self.graph.live_channels(source_out, keep)
                if live_in is None and live_out is None:
                    continue
                conv = model.get_submodule(name)
                no_in = torch.zeros(conv.in_channels, dtype=torch.bool, device=conv.weight.device)
                no_out = torch.zeros(conv.out_channels, dtype=torch.bool, device=conv.weight.device)
                dead_out = no_out if live_out is None else ~live_out
                dead_in = no_in if live_in is None else ~live_in
                removed = (dead_out[:, None] | dead_in[None, :])[:, :, None, None].expand_as(conv.weight)
                selected.append(Selected(f"{name}.weight", conv.weight, removed))
                if conv.bias is not None:
                    selected.append(Selected(f"{name}.bias", conv.bias, dead_out))
        return selected

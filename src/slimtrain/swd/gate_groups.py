"""The default channel model of structured SWD, network slimming and the channel baselines: DepGraph groups.

A gate is a coupled channel group (Torch-Pruning's dependency graph,
:func:`slimtrain.compress.coupled_channel_groups`, the same groups the export removes channels from) holding
at least one affine BatchNorm. Channel c of a gate scores the **max over the group's BatchNorms of |γ_c|**
(a channel stays while any of its BatchNorms still scales it); with one global threshold th, a gate keeps the
channels scoring ≥ th (or > th), and always at least its highest-scoring one (the export never empties a
group). Removing a channel removes every slice of the group for it (those
:func:`slimtrain.compress.channel_masks` zeroes; tests/swd/test_gate_groups.py checks the masks against it),
and the parameter count at a threshold is counted on exactly those masks: it is the parameter count of the
exported model (docs/swd.md#structured-swd-and-the-parameter-budget).

Gates name the layers of the unwrapped model, and every method reads the model unwrapped
(:mod:`slimtrain._wrappers`): gates built on a ``DataParallel`` or ``torch.compile`` wrapper serve the model
inside it too.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

from slimtrain._shared_params import shared_parameter_groups
from slimtrain._wrappers import unwrap_model
from slimtrain.compress import ChannelGroup, ChannelPruningPlan, GroupSelection
from slimtrain.compress.channel_groups import weight_channel_axis
from slimtrain.compress.torch_pruning_adapter import coupled_channel_groups
from slimtrain.errors import BadInputError, UnsupportedModelError
from slimtrain.pruning.scores import batchnorm_gamma_scores
from slimtrain.swd.channels import GateCompare

__all__ = ["GroupGates"]

Removed = Literal["gates", "all"]


def _is_affine_norm(module: nn.Module) -> bool:
    return isinstance(module, _BatchNorm) and module.affine


class GroupGates:
    """Gates of a model: its DepGraph channel groups that hold an affine BatchNorm.

    Build it with :meth:`from_model`. It holds names and indices only, so it serves any model of the same
    architecture (e.g. a deep copy).

    Attributes:
        groups: The gating groups, in module order.
        gates: Names of every BatchNorm of those groups (the layers whose γ gate channels), in module order.
    """

    def __init__(self, model: nn.Module, groups: list[ChannelGroup]) -> None:
        model = unwrap_model(model)
        self.groups = groups
        order = {name: i for i, (name, _) in enumerate(model.named_modules())}
        offsets = [0]
        for group in groups:
            offsets.append(offsets[-1] + group.size)
        self._offsets = offsets  # group i's root channels: entries offsets[i]:offsets[i + 1] of a flat vector
        # Every BatchNorm slice: (BatchNorm name, its channel indices, their flat root channels).
        self._norm_slices = [
            (s.module, torch.tensor(s.indices), torch.tensor(s.root_indices) + offsets[gi])
            for gi, g in enumerate(groups)
            for s in g.members
            if _is_affine_norm(model.get_submodule(s.module))
        ]
        if not self._norm_slices:
            raise BadInputError(
                "GroupGates needs at least one channel group holding an affine BatchNorm; build it with "
                "GroupGates.from_model(model, example_inputs), which finds them"
            )
        self.gates = sorted({name for name, _, _ in self._norm_slices}, key=order.__getitem__)
        total = offsets[-1]
        covered = torch.zeros(total, dtype=torch.bool)
        for _, _, flat in self._norm_slices:
            covered[flat] = True
        self._static: dict[str, Tensor] = {
            "covered": covered,
            "covered_index": covered.nonzero().flatten(),
            "group_of": torch.cat([torch.full((g.size,), i) for i, g in enumerate(groups)]),
            "position": torch.arange(total),
            "norm_flat": torch.cat([flat for _, _, flat in self._norm_slices]),
        }
        for i, (_, idx, flat) in enumerate(self._norm_slices):
            self._static[f"norm{i}"], self._static[f"norm{i}_flat"] = idx, flat
        self._build_count(model)
        self._on_device: dict[torch.device, dict[str, Tensor]] = {}

    def _tensors(self, device: torch.device) -> dict[str, Tensor]:
        """The index tensors, on ``device`` (copied once per device)."""
        if device not in self._on_device:
            self._on_device[device] = {k: v.to(device) for k, v in self._static.items()}
        return self._on_device[device]

    @classmethod
    def from_model(cls, model: nn.Module, example_inputs: Any) -> GroupGates:
        """Find the gating groups of ``model`` by tracing it on ``example_inputs``.

        Groups are rooted at convolutions and linears, as the export's
        (:func:`slimtrain.compress.to_exported`).

        Raises:
            BadInputError: ``example_inputs`` is ``None``.
            UnsupportedChannelFlowError: The dependency graph cannot follow the model's channels, e.g. through
                a zero-padding ("option A") shortcut; the message names the operation and its module.
            UnsupportedModelError: No group holds an affine BatchNorm.
        """
        model = unwrap_model(model)
        if example_inputs is None:
            raise BadInputError(
                "the 'groups' channel model traces the model's channel groups and needs example_inputs "
                "(a small input batch); pass example_inputs=..., or channel_model='reference'"
            )
        what = (
            "structured SWD, network slimming and the channel baselines gate channels by BatchNorm γ: use an "
            "unstructured method"
        )
        if not any(_is_affine_norm(m) for m in model.modules()):  # nothing to trace for
            raise UnsupportedModelError(f"{type(model).__qualname__} has no affine BatchNorm; {what}")
        groups = coupled_channel_groups(model, example_inputs, root_types=(_ConvNd, nn.Linear))
        gating = [g for g in groups if any(_is_affine_norm(model.get_submodule(s.module)) for s in g.members)]
        members = {s.module for g in gating for s in g.members}
        for names in shared_parameter_groups(model):
            owners = [n.rpartition(".")[0] for n in names]
            if any(owner in members for owner in owners):
                raise UnsupportedModelError(
                    f"the tied parameter {' = '.join(names)} lies in a channel group that gates channels; "
                    "removing a channel would untie it (the export refuses), so the count could not be "
                    "reached: untie the parameters, or use an unstructured method"
                )
        if not gating:
            raise UnsupportedModelError(
                f"{type(model).__qualname__} has no removable channel group holding an affine BatchNorm "
                f"(groups holding channels of a model input or output are never removed); {what}"
            )
        return cls(model, gating)

    def _build_count(self, model: nn.Module) -> None:
        """Index, for every (parameter, axis) a group touches, which root channel removes which entry.

        The slices touched are those :func:`slimtrain.compress.channel_masks` zeroes (tests/swd/
        test_gate_groups.py checks the masks against it): conv/linear output rows and biases, BatchNorm γ/β,
        the consumers' input columns; a depthwise conv's input side follows its output side. Masks and count
        are computed from this one index on the model's device, without reading it on the host.
        """
        names = {id(p): n for n, p in model.named_parameters()}  # tied parameters: one name
        axes: dict[tuple[str, int], tuple[list[Tensor], list[Tensor]]] = {}
        for gi, group in enumerate(self.groups):
            for s in group.members:
                module = model.get_submodule(s.module)
                if isinstance(module, _BatchNorm) or s.dim == "out":
                    touched = [
                        (getattr(module, p), weight_channel_axis(module, "out") if p == "weight" else 0)
                        for p in ("weight", "bias")
                        if isinstance(getattr(module, p, None), nn.Parameter)
                    ]
                elif isinstance(module, _ConvNd) and module.groups > 1:
                    continue
                else:
                    touched = [(module.weight, weight_channel_axis(module, "in"))]
                for param, axis in touched:
                    positions, channels = axes.setdefault((names[id(param)], axis), ([], []))
                    positions.append(torch.tensor(s.indices))
                    channels.append(torch.tensor(s.root_indices) + self._offsets[gi])
        params = dict(model.named_parameters())
        self._entries: list[tuple[str, int]] = []
        entry_param, entry_size, entry_of, channel_of = [], [], [], []
        param_index: dict[str, int] = {}
        for e, ((name, axis), (positions, channels)) in enumerate(axes.items()):
            pos, chan = torch.cat(positions), torch.cat(channels)
            pairs = torch.unique(torch.stack([pos, chan]), dim=1)
            if pairs.shape[1] != torch.unique(pairs[0]).numel():
                raise UnsupportedModelError(
                    f"parameter {name!r}: an entry along axis {axis} belongs to two coupled channels; its "
                    "removal cannot be counted"
                )
            self._entries.append((name, axis))
            self._static[f"pos{e}"], self._static[f"chan{e}"] = pairs[0], pairs[1]
            entry_param.append(param_index.setdefault(name, len(param_index)))
            entry_size.append(params[name].shape[axis])
            entry_of.append(torch.full((pairs.shape[1],), e))
            channel_of.append(pairs[1])
        per_param: list[list[int]] = [[] for _ in param_index]
        for e, p in enumerate(entry_param):
            per_param[p].append(e)
        width = max((len(e) for e in per_param), default=0)
        # Kept entries of a parameter = (its size over the counted axes) × Π kept along each counted axis.
        self._static.update(
            entry_size=torch.tensor([*entry_size, 1], dtype=torch.long),  # last: factor 1, for padding
            entry_of=torch.cat(entry_of) if entry_of else torch.zeros(0, dtype=torch.long),
            channel_of=torch.cat(channel_of) if channel_of else torch.zeros(0, dtype=torch.long),
            param_axes=torch.tensor(
                [e + [len(entry_size)] * (width - len(e)) for e in per_param], dtype=torch.long
            ).reshape(len(per_param), width),
            rest=torch.tensor(
                [
                    params[n].numel() // int(torch.tensor([entry_size[e] for e in per_param[i]]).prod())
                    for n, i in param_index.items()
                ],
                dtype=torch.long,
            ),
        )
        self._untouched = sum(p.numel() for n, p in params.items() if n not in param_index)

    def _flat_scores(self, model: nn.Module) -> Tensor:
        """Score of every root channel of every gating group, on the model's device (+inf: no BatchNorm)."""
        model = unwrap_model(model)
        t = self._tensors(model.get_submodule(self.gates[0]).weight.device)
        values = torch.cat(
            [
                batchnorm_gamma_scores(model.get_submodule(name))[t[f"norm{i}"]]
                for i, (name, _, _) in enumerate(self._norm_slices)
            ]
        ).nan_to_num(nan=0.0)  # a NaN would never equal its group's best: the keep-one rule needs an order
        scores = torch.full((self._offsets[-1],), -torch.inf, dtype=values.dtype, device=values.device)
        scores.scatter_reduce_(0, t["norm_flat"], values, "amax")
        return scores.masked_fill(~t["covered"], torch.inf)

    def channel_scores(self, model: nn.Module) -> list[Tensor]:
        """Per gating group, the score of each root channel: max over the group's BatchNorms of |γ_c|.

        A root channel no BatchNorm of its group covers scores +inf (never removed).
        """
        return list(self._flat_scores(model).split([g.size for g in self.groups]))

    def scores(self, model: nn.Module) -> Tensor:
        """The score of every gate channel (the candidates of :func:`slimtrain.swd.budget_threshold`)."""
        scores = self._flat_scores(model)
        return scores[self._tensors(scores.device)["covered_index"]]

    def _keep(self, scores: Tensor, thresholds: Tensor, compare: GateCompare) -> Tensor:
        """Kept root channels at each of ``thresholds`` (shape ``[T, channels]``), from the flat scores.

        On the device, without reading it on the host (docs/training.md, "Host synchronisation").
        """
        t = self._tensors(scores.device)
        column = thresholds.to(device=scores.device, dtype=scores.dtype)[:, None]
        kept = scores >= column if compare == "ge" else scores > column
        groups = len(self.groups)
        any_kept = torch.zeros((len(thresholds), groups), dtype=torch.long, device=scores.device)
        any_kept.index_add_(1, t["group_of"], kept.long())
        # The channel an emptied group keeps: its best, the lowest index on a tie (independent of th).
        best = torch.full((groups,), -torch.inf, dtype=scores.dtype, device=scores.device)
        best.scatter_reduce_(0, t["group_of"], scores, "amax")
        total = self._offsets[-1]
        candidates = torch.where(scores == best[t["group_of"]], t["position"], total)
        first = torch.full((groups,), total, dtype=torch.long, device=scores.device)
        first.scatter_reduce_(0, t["group_of"], candidates, "amin")
        emptied = (any_kept == 0)[:, t["group_of"]]
        return kept | (emptied & (t["position"] == first[t["group_of"]]))

    def _flat_keep(self, model: nn.Module, threshold: float | Tensor, compare: GateCompare) -> Tensor:
        scores = self._flat_scores(model)
        # A float in float64, so that a float64 model compares at full precision.
        if isinstance(threshold, Tensor):
            thresholds = threshold.reshape(1)
        else:
            thresholds = torch.tensor([threshold], dtype=torch.float64)
        return self._keep(scores, thresholds, compare)[0]

    def keep_masks(
        self, model: nn.Module, threshold: float | Tensor, compare: GateCompare = "ge"
    ) -> list[Tensor]:
        """Per gating group, its kept root channels: score ≥ (``"ge"``) or > (``"gt"``) threshold.

        A group left empty keeps its highest-scoring channel (the lowest index on a tie).
        """
        return list(self._flat_keep(model, threshold, compare).split([g.size for g in self.groups]))

    def plan(
        self, model: nn.Module, threshold: float | Tensor, compare: GateCompare = "ge"
    ) -> ChannelPruningPlan:
        """The channels removed at ``threshold``, as a plan for :mod:`slimtrain.compress`."""
        return ChannelPruningPlan(
            tuple(
                GroupSelection(group, tuple((~kept).nonzero().flatten().tolist()))
                for group, kept in zip(self.groups, self.keep_masks(model, threshold, compare), strict=True)
            )
        )

    def removal_masks(
        self, model: nn.Module, threshold: float | Tensor, compare: GateCompare = "ge", which: Removed = "all"
    ) -> dict[str, Tensor]:
        """``{parameter name: removed entries}`` at ``threshold``.

        ``which="all"``: every slice of the removed channels (those :func:`slimtrain.compress.channel_masks`
        zeroes for :meth:`plan`); ``"gates"``: the γ and β of the gating BatchNorms only. Parameters are named
        as by ``model.named_parameters()``.
        """
        model = unwrap_model(model)
        removed_flat = ~self._flat_keep(model, threshold, compare)
        t = self._tensors(removed_flat.device)
        gates = set(self.gates)
        masks: dict[str, Tensor] = {}
        for e, (name, axis) in enumerate(self._entries):
            if which == "gates" and name.rpartition(".")[0] not in gates:
                continue
            param = model.get_parameter(name)
            along = torch.zeros(param.shape[axis], dtype=torch.bool, device=param.device)
            along[t[f"pos{e}"]] = removed_flat[t[f"chan{e}"]]
            shape = [1] * param.dim()
            shape[axis] = -1
            removed = along.view(shape).expand_as(param)
            masks[name] = removed.clone() if name not in masks else masks[name] | removed
        return masks

    def parameter_counts(self, model: nn.Module, thresholds: Tensor, compare: GateCompare = "ge") -> Tensor:
        """:meth:`parameter_count` at each of ``thresholds`` (1-D), computed on the model's device.

        Returns:
            A ``torch.long`` tensor shaped like ``thresholds``, not read on the host.

        Raises:
            ValueError: ``thresholds`` is not 1-D.
        """
        if thresholds.dim() != 1:
            raise ValueError(f"thresholds must be 1-D, got shape {tuple(thresholds.shape)}")
        keep = self._keep(self._flat_scores(model), thresholds, compare)
        t = self._tensors(keep.device)
        removed = torch.zeros((len(keep), len(t["entry_size"])), dtype=torch.long, device=keep.device)
        removed.index_add_(1, t["entry_of"], (~keep[:, t["channel_of"]]).long())
        kept = t["entry_size"] - removed
        return (t["rest"] * kept[:, t["param_axes"]].prod(2)).sum(1) + self._untouched

    def parameter_count(self, model: nn.Module, threshold: float, compare: GateCompare = "ge") -> int:
        """Distinct parameters (tied ones once) left after removing the channels at ``threshold``.

        Equals the parameter count of the model exported after masking :meth:`removal_masks` (``"all"``).
        """
        return int(self.parameter_counts(model, torch.tensor([threshold], dtype=torch.float64), compare)[0])

    def refuse_frozen(self, model: nn.Module, what: str) -> None:
        """Raise if a layer of a gating group has a frozen parameter (``requires_grad=False``).

        Raises:
            UnsupportedModelError: Naming the first such layer.
        """
        model = unwrap_model(model)
        for group in self.groups:
            for s in group.members:
                module = model.get_submodule(s.module)
                if any(not p.requires_grad for p in module.parameters(recurse=False)):
                    raise UnsupportedModelError(
                        f"{what} prunes channels through layer {s.module!r} ({type(module).__name__}), whose "
                        "parameters are frozen (requires_grad=False); unfreeze it, or use an unstructured "
                        "method, which leaves frozen parameters alone"
                    )

"""Channel structure of a CNN for structured SWD: BatchNorm gates and the analytic surviving-parameter count.

Structured SWD (docs/swd.md#structured-swd-and-the-parameter-budget) gates channel c of a prunable BatchNorm
by |γ_c| ≥ th with one global threshold th. :class:`ChannelGraph` finds, by tracing the model with
``torch.fx``, which BatchNorms are gates and which gates decide the live input and output channels of every
convolution, BatchNorm and linear layer, for any network built from ``nn.Conv2d → nn.BatchNorm2d`` pairs,
including ResNets with a BatchNorm after each residual addition. From that it counts the parameters of the
network whose gated-off channels are removed.

Rules (they reproduce the reference ResNet count exactly):

- An affine ``BatchNorm2d`` is a gate unless its output is an operand of an addition: the pre-add BN of a
  residual block and the shortcut BN stay, the BN after the addition gates the residual stream (``gates=``
  overrides).
- Forward, a tensor's live channels are those of the last gate it passed through, across activations that
  map 0 to 0, pooling, dropout and flattening; an addition is live where any operand is; anything else
  (another layer, an unknown op) makes every channel live.
- Backward, a convolution's output channel is dead when it is dead in every gate its output reaches through
  non-gate BatchNorms, additions and the same pass-through ops; an ungated path makes it live.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn
from torch.nn.modules.batchnorm import _BatchNorm

from slimtrain.errors import BadInputError, UnsupportedModelError
from slimtrain.pruning.scores import batchnorm_gamma_scores

__all__ = ["ChannelGraph", "GateCompare"]

GateCompare = Literal["ge", "gt"]

ChannelSource = frozenset[str] | None  # gates whose union of kept channels is live; None: all live

_ADD_FUNCTIONS = {operator.add, operator.iadd, torch.add}
_ADD_METHODS = {"add", "add_", "__add__", "__iadd__"}
# Ops that keep a zero channel at zero and keep channels on dim 1 (flattening keeps them channel-major).
_PASS_FUNCTIONS = {
    F.relu,
    torch.relu,
    F.relu6,
    F.leaky_relu,
    F.hardtanh,
    F.gelu,
    F.silu,
    F.dropout,
    F.avg_pool2d,
    F.max_pool2d,
    F.adaptive_avg_pool2d,
    F.adaptive_max_pool2d,
    torch.flatten,
}
_PASS_METHODS = {"relu", "relu_", "view", "reshape", "flatten", "contiguous", "clone"}
_PASS_MODULES = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.Hardtanh,
    nn.GELU,
    nn.SiLU,
    nn.Identity,
    nn.Dropout,
    nn.AvgPool2d,
    nn.MaxPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.Flatten,
)
_LAYERS = (nn.Conv2d, _BatchNorm, nn.Linear)
# Users that read a tensor's metadata only.
_META_METHODS = {"size", "dim"}


@dataclass
class ChannelGraph:
    """Gates and live-channel sources of every parameterised layer of one model (by qualified name).

    Build it with :meth:`from_model`; it holds names only, so the same graph serves any model of the same
    architecture (e.g. a deep copy).

    Attributes:
        gates: Names of the gating BatchNorms, in model order.
        convs: ``{conv name: (input source, output source)}``.
        norms: ``{BatchNorm name: source of its channels}`` (a gate's source is itself).
        linears: ``{linear name: (input source, input features per channel)}``.
    """

    gates: list[str]
    convs: dict[str, tuple[ChannelSource, ChannelSource]] = field(default_factory=dict)
    norms: dict[str, ChannelSource] = field(default_factory=dict)
    linears: dict[str, tuple[ChannelSource, int]] = field(default_factory=dict)

    @classmethod
    def from_model(cls, model: nn.Module, gates: Iterable[str] | None = None) -> ChannelGraph:
        """Trace ``model`` with ``torch.fx`` and derive its channel structure.

        Args:
            model: A CNN whose forward is traceable by ``torch.fx.symbolic_trace``.
            gates: Names of the BatchNorms to use as gates instead of the automatic rule.

        Returns:
            The channel graph.

        Raises:
            UnsupportedModelError: If the model cannot be traced, has no gate, uses grouped convolutions or a
                layer with parameters other than Conv2d, BatchNorm and Linear, calls a layer twice, or a
                layer's channel count disagrees with its gates (the message names the layer).
        """
        try:
            traced = fx.symbolic_trace(model)
        except Exception as exc:  # fx raises many types; the cause is kept
            raise UnsupportedModelError(
                "structured SWD traces the model with torch.fx to find its channel gates, and "
                f"{type(model).__name__} cannot be traced ({type(exc).__name__}: {exc}); use unstructured "
                "SWD, or a model whose forward torch.fx can trace"
            ) from exc
        modules = dict(model.named_modules())
        nodes = list(traced.graph.nodes)
        called: dict[str, fx.Node] = {}
        for node in nodes:
            if node.op != "call_module":
                continue
            module = modules[node.target]
            if isinstance(module, _LAYERS):
                if node.target in called:
                    raise UnsupportedModelError(
                        f"layer {node.target!r} ({type(module).__name__}) is called more than once in the "
                        "forward pass; structured SWD needs every Conv2d, BatchNorm and Linear called once"
                    )
                called[node.target] = node
            elif any(True for _ in module.parameters(recurse=False)):
                # Its channels would be counted as ungated and never pruned: a silently wrong budget.
                raise UnsupportedModelError(
                    f"structured SWD's channel graph knows Conv2d, BatchNorm and Linear layers only; "
                    f"{node.target!r} is a {type(module).__name__}; use unstructured SWD for this model"
                )

        def is_add(node: fx.Node) -> bool:
            return (node.op == "call_function" and node.target in _ADD_FUNCTIONS) or (
                node.op == "call_method" and node.target in _ADD_METHODS
            )

        def is_pass(node: fx.Node) -> bool:
            if node.op == "call_function":
                return node.target in _PASS_FUNCTIONS
            if node.op == "call_method":
                return node.target in _PASS_METHODS
            return node.op == "call_module" and isinstance(modules[node.target], _PASS_MODULES)

        def is_norm(node: fx.Node) -> bool:
            return node.op == "call_module" and isinstance(modules[node.target], _BatchNorm)

        if gates is None:
            gate_names = [
                name
                for name, node in called.items()
                if isinstance(modules[name], nn.BatchNorm2d)
                and modules[name].affine
                and not any(is_add(u) for u in node.users)
            ]
        else:
            gate_names = list(gates)
            for name in gate_names:
                if name not in called or not is_norm(called[name]) or not modules[name].affine:
                    raise BadInputError(
                        f"gate {name!r} is not an affine BatchNorm called in the forward pass"
                    )
        if not gate_names:
            raise UnsupportedModelError(
                f"{type(model).__name__} has no BatchNorm2d that can gate channels (an affine BatchNorm2d "
                "whose output is not directly added to another tensor); structured SWD prunes channels "
                "through such gates only: use unstructured SWD"
            )
        gate_set = set(gate_names)

        # Forward: which gates decide the live channels of each tensor.
        forward: dict[fx.Node, ChannelSource] = {}
        for node in nodes:
            tensor_args = [a for a in node.args if isinstance(a, fx.Node)]
            if node.op == "call_module" and node.target in gate_set:
                forward[node] = frozenset([node.target])
            elif is_pass(node) and tensor_args:
                forward[node] = forward.get(tensor_args[0])
            elif is_add(node) and tensor_args:
                sources = [forward.get(a) for a in tensor_args]
                forward[node] = None if any(s is None for s in sources) else frozenset().union(*sources)
            else:
                forward[node] = None

        # Backward: which gates decide whether a tensor's channels are used at all.
        backward: dict[fx.Node, ChannelSource] = {}

        def consumers(node: fx.Node) -> ChannelSource:
            if node in backward:
                return backward[node]
            users = [u for u in node.users if not (u.op == "call_method" and u.target in _META_METHODS)]
            reached: set[str] = set()
            result: ChannelSource = None
            if users:
                for user in users:
                    if user.op == "call_module" and user.target in gate_set:
                        reached.add(user.target)
                        continue
                    if not (is_add(user) or ((is_norm(user) or is_pass(user)) and user.args[0] is node)):
                        break
                    downstream = consumers(user)
                    if downstream is None:
                        break
                    reached |= downstream
                else:
                    result = frozenset(reached)
            backward[node] = result
            return result

        graph = cls(gates=gate_names)
        for name, node in called.items():
            module = modules[name]
            source_in = forward.get(node.args[0]) if isinstance(node.args[0], fx.Node) else None
            if isinstance(module, nn.Conv2d):
                if module.groups != 1:
                    raise UnsupportedModelError(
                        f"conv {name!r} ({type(module).__name__}) has groups={module.groups}; structured SWD "
                        "supports groups=1 only"
                    )
                source_out = consumers(node)
                graph._check(modules, name, source_in, module.in_channels, "input")
                graph._check(modules, name, source_out, module.out_channels, "output")
                graph.convs[name] = (source_in, source_out)
            elif isinstance(module, _BatchNorm):
                source = frozenset([name]) if name in gate_set else consumers(node)
                graph._check(modules, name, source, module.num_features, "channel")
                graph.norms[name] = source
            else:
                per_channel = 1
                if source_in is not None:
                    channels = modules[next(iter(source_in))].num_features
                    if module.in_features % channels:
                        raise UnsupportedModelError(
                            f"linear {name!r} has {module.in_features} inputs, not a multiple of the "
                            f"{channels} channels of its gate"
                        )
                    per_channel = module.in_features // channels
                graph.linears[name] = (source_in, per_channel)
        return graph

    @staticmethod
    def _check(
        modules: dict[str, nn.Module], layer: str, source: ChannelSource, channels: int, side: str
    ) -> None:
        for gate in source or ():
            if modules[gate].num_features != channels:
                raise UnsupportedModelError(
                    f"layer {layer!r} has {channels} {side} channels but its gate {gate!r} has "
                    f"{modules[gate].num_features}"
                )

    def refuse_frozen(self, model: nn.Module, what: str) -> None:
        """Raise if a layer whose channels can be pruned has a frozen parameter (``requires_grad=False``).

        Pruning a channel zeroes it in every layer it passes through, so a frozen layer on its way could
        not be left alone.

        Raises:
            UnsupportedModelError: Naming the first such layer.
        """
        for name in (*self.convs, *self.norms, *self.linears):
            module = model.get_submodule(name)
            if any(not p.requires_grad for p in module.parameters(recurse=False)):
                raise UnsupportedModelError(
                    f"{what} prunes channels through layer {name!r} ({type(module).__name__}), whose "
                    "parameters are frozen (requires_grad=False); unfreeze it, or use an unstructured "
                    "method, which leaves frozen parameters alone"
                )

    def scores(self, model: nn.Module) -> Tensor:
        """|γ| of every gate channel, gate after gate (the candidates of the budget bisection)."""
        return torch.cat([batchnorm_gamma_scores(model.get_submodule(g)) for g in self.gates])

    def gate_keep_masks(
        self, model: nn.Module, threshold: float, compare: GateCompare = "ge"
    ) -> dict[str, Tensor]:
        """Kept channels of every gate: |γ| ≥ threshold (``"ge"``) or |γ| > threshold (``"gt"``)."""
        keep = {}
        for name in self.gates:
            gamma = batchnorm_gamma_scores(model.get_submodule(name))
            keep[name] = gamma >= threshold if compare == "ge" else gamma > threshold
        return keep

    @staticmethod
    def live_channels(source: ChannelSource, keep: dict[str, Tensor]) -> Tensor | None:
        """Boolean live-channel mask of a source (None when every channel is live)."""
        if source is None:
            return None
        masks = [keep[g] for g in sorted(source)]
        live = masks[0]
        for m in masks[1:]:
            live = live | m
        return live

    def parameter_count(self, model: nn.Module, threshold: float, compare: GateCompare = "ge") -> int:
        """P(th): parameters of the network whose gated-off channels are removed (docs/swd.md).

        Convolutions keep live-out × live-in × k² weights (+ live-out biases), BatchNorms 2 × live channels,
        linear layers out × live-in inputs (+ biases); parameters outside these layers all count.
        P(0) with ``compare="ge"`` equals the model's total parameter count.

        Args:
            model: The model the graph was built from (or one of the same architecture).
            threshold: Gate threshold th.
            compare: ``"ge"`` keeps |γ| ≥ th (corrected, the same rule as the mask); ``"gt"`` keeps |γ| > th
                (the reference count).

        Returns:
            The count.
        """
        keep = self.gate_keep_masks(model, threshold, compare)
        cache: dict[ChannelSource, int | None] = {}

        def alive(source: ChannelSource) -> int | None:
            if source not in cache:
                live = self.live_channels(source, keep)
                cache[source] = None if live is None else int(live.sum())
            return cache[source]

        counted: set[int] = set()
        total = 0
        for name, (source_in, source_out) in self.convs.items():
            conv = model.get_submodule(name)
            n_out = alive(source_out)
            n_out = conv.out_channels if n_out is None else n_out
            n_in = alive(source_in)
            n_in = conv.in_channels if n_in is None else n_in
            total += n_out * n_in * conv.weight[0, 0].numel() + (n_out if conv.bias is not None else 0)
            counted.update(id(p) for p in conv.parameters(recurse=False))
        for name, source in self.norms.items():
            norm = model.get_submodule(name)
            n = alive(source)
            n = norm.num_features if n is None else n
            total += 2 * n if norm.affine else 0
            counted.update(id(p) for p in norm.parameters(recurse=False))
        for name, (source_in, per_channel) in self.linears.items():
            linear = model.get_submodule(name)
            n_in = alive(source_in)
            n_in = linear.in_features if n_in is None else n_in * per_channel
            total += linear.out_features * n_in + (linear.out_features if linear.bias is not None else 0)
            counted.update(id(p) for p in linear.parameters(recurse=False))
        total += sum(p.numel() for p in model.parameters() if id(p) not in counted)
        return total

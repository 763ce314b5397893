"""The one place slimtrain talks to Torch-Pruning (DepGraph; Fang et al., CVPR 2023), pinned to 1.6.1.

It finds coupled channel groups, physically removes channels, and checks beforehand that the model has no
operation the dependency graph would mis-model: DepGraph treats any unknown operation as element-wise
(channel i in → channel i out), which is wrong for zero-padding ("option A") residual shortcuts and for
concatenations with constant tensors; removing channels through them would produce a model that crashes or
computes something else, so such models are refused with :class:`UnsupportedChannelFlowError`, as are models
with recurrent layers (whose tracing DepGraph gets wrong).

A model inside a wrapper (``DataParallel``, ``torch.compile``) is traced unwrapped (dynamo must not see the
tracing hooks), and its groups name the layers of the unwrapped model (:mod:`slimtrain._wrappers`).
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch_pruning as tp
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd
from torch.overrides import TorchFunctionMode

from slimtrain._model_io import call_model, flatten_tensors, kept_training_modes
from slimtrain._wrappers import unwrap_model
from slimtrain.compress.channel_groups import ChannelGroup, ChannelSlice
from slimtrain.errors import UnsupportedChannelFlowError

TESTED_TORCH_PRUNING_VERSION = "1.6.1"

# Layers whose channel slices this project masks and exports (with exactly equal outputs).
_SUPPORTED_LAYERS = (_ConvNd, nn.Linear, _BatchNorm)

# grad_fn name fragments DepGraph maps to dedicated index-mapping ops; any other non-module op is taken
# as element-wise (torch_pruning.dependency.graph.DependencyGraph._trace_computational_graph).
_STRUCTURAL_OPS = ("catbackward", "split", "unbind", "expand", "view", "reshape", "slice")


def _output_tensors(output: Any) -> list[torch.Tensor]:
    """DepGraph traces back from these (its own flattening misses dataclass outputs)."""
    return [tensor for _, tensor in flatten_tensors(output)]


@contextmanager
def _traced(model: nn.Module):
    """Keep every sub-module's training flag (DepGraph switches the model to eval) and enable autograd."""
    with kept_training_modes(model), torch.enable_grad():
        yield


def _registered_layer_types() -> tuple[type, ...]:
    graph = tp.DependencyGraph()
    return tuple(c for c in (tp.ops.type2class(t) for t in graph.REGISTERED_PRUNERS) if isinstance(c, type))


class _ChannelFlowRecorder(TorchFunctionMode):
    """Checks every tensor operation outside prunable layers for channel counts DepGraph would get wrong."""

    def __init__(self, names: dict[nn.Module, str], running: list[nn.Module], layer_types: tuple[type, ...]):
        super().__init__()
        self.names, self.running, self.layer_types = names, running, layer_types
        self.problems: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        inside_layer = self.running and isinstance(self.running[-1], self.layer_types)
        if inside_layer or not isinstance(result, torch.Tensor) or result.grad_fn is None or result.dim() < 2:
            return result
        op = result.grad_fn.name().lower()
        tensors = [a for a in _flat(args) if isinstance(a, torch.Tensor)] + [
            a for a in _flat(kwargs.values()) if isinstance(a, torch.Tensor)
        ]
        where = (self.names[self.running[-1]] if self.running else "") or "<model>"
        name = getattr(func, "__name__", str(func))
        if "catbackward" in op:
            dim = kwargs.get("dim", args[1] if len(args) > 1 and isinstance(args[1], int) else 0)
            if dim % result.dim() == 1 and any(not t.requires_grad for t in tensors):
                self.problems.append(
                    f"{name} in {where!r} concatenates a constant tensor along the channel dimension"
                )
        elif not any(fragment in op for fragment in _STRUCTURAL_OPS):
            for t in tensors:
                if t.requires_grad and t.dim() == result.dim() and t.shape[1] not in (1, result.shape[1]):
                    self.problems.append(
                        f"{name} in {where!r} changes dimension 1 (channels) from {t.shape[1]} to "
                        f"{result.shape[1]}, which the graph would take as element-wise"
                    )
                    break
        return result


def _flat(values: Iterable[Any]) -> list[Any]:
    out: list[Any] = []
    for value in values:
        out.extend(_flat(value) if isinstance(value, (list, tuple)) else [value])
    return out


def check_channel_flow(model: nn.Module, example_inputs: Any) -> None:
    """Raise if channels pass through an operation DepGraph would treat wrongly.

    Args:
        model: The model (its parameters and training flags are left unchanged).
        example_inputs: An input tensor, a tuple of positional inputs or a dict of keyword inputs.

    Raises:
        UnsupportedChannelFlowError: Naming each offending operation and the module it runs in.
    """
    model = unwrap_model(model)
    recurrent = [
        f"{name!r} ({type(m).__qualname__})"
        for name, m in model.named_modules()
        if isinstance(m, (nn.RNNBase, nn.RNNCellBase))
    ]
    # DepGraph's RNN support fails on stacked/bidirectional layers; our masks stop at conv/linear/BN.
    if recurrent:
        raise UnsupportedChannelFlowError(
            f"structured pruning refused: recurrent layer {', '.join(recurrent)}: channel groups are not "
            "followed through recurrent layers; prune the model unstructured (global_magnitude_prune) or "
            "factorize it (svd_decompose) instead"
        )
    running: list[nn.Module] = []  # the modules whose forward is executing, innermost last

    def push(module: nn.Module, _inputs: Any) -> None:
        running.append(module)

    def pop(module: nn.Module, _inputs: Any, _output: Any) -> None:
        running.pop()

    handles = [m.register_forward_pre_hook(push) for m in model.modules()]
    handles += [m.register_forward_hook(pop, always_call=True) for m in model.modules()]
    recorder = _ChannelFlowRecorder(
        {m: n for n, m in model.named_modules()}, running, _registered_layer_types()
    )
    try:
        with _traced(model):
            model.eval()
            with recorder:
                call_model(model, example_inputs)
    finally:
        for handle in handles:
            handle.remove()
    if recorder.problems:
        raise UnsupportedChannelFlowError(
            "structured pruning refused: the dependency graph cannot follow channels through "
            + "; ".join(dict.fromkeys(recorder.problems))
            + ". Zero-padding ('option A') shortcuts are such operations; use 1×1-conv ('option B') ones."
        )


@dataclass(frozen=True)
class _Boundary:
    """Where the traced graph meets the model's inputs and outputs, which no channel removal may change.

    Attributes:
        output_nodes: The graph nodes computing a tensor the model returns (every output tensor).
        fed_by_input: The layers called at least once on a tensor no parameter computes (a model input, or
            a function of the inputs alone): DepGraph sees no producer whose channels could follow theirs.
    """

    output_nodes: frozenset[Any]
    fed_by_input: frozenset[nn.Module]


def _build_graph(model: nn.Module, example_inputs: Any) -> tuple[tp.DependencyGraph, _Boundary]:
    installed = importlib.metadata.version("torch-pruning")  # tp.__version__ of 1.6.1 still reads "1.6.0"
    if installed != TESTED_TORCH_PRUNING_VERSION:
        raise RuntimeError(f"torch-pruning {TESTED_TORCH_PRUNING_VERSION} is required, found {installed}")
    check_channel_flow(model, example_inputs)
    produced: dict[Any, nn.Module] = {}  # grad_fn of every layer call's output -> the layer
    fed_by_input: set[nn.Module] = set()
    output_grad_fns: list[Any] = []

    def record_input(module: nn.Module, inputs: Any) -> None:
        if any(t.grad_fn is None for _, t in flatten_tensors(inputs) if t.is_floating_point()):
            fed_by_input.add(module)

    def record_output(module: nn.Module, _inputs: Any, output: Any) -> None:
        for _, tensor in flatten_tensors(output):
            produced[tensor.grad_fn] = module  # the outermost layer last, as DepGraph records it

    def outputs(output: Any) -> list[torch.Tensor]:
        tensors = _output_tensors(output)
        output_grad_fns.extend(t.grad_fn for t in tensors if t.grad_fn is not None)
        return tensors

    layers = [m for m in model.modules() if isinstance(m, _registered_layer_types())]
    handles = [m.register_forward_pre_hook(record_input) for m in layers]
    handles += [m.register_forward_hook(record_output) for m in layers]
    try:
        with _traced(model):
            graph = tp.DependencyGraph().build_dependency(
                model,
                example_inputs=example_inputs,
                forward_fn=call_model,
                output_transform=outputs,
                verbose=False,
            )
    finally:
        for handle in handles:
            handle.remove()
    node_of = {node.grad_fn: node for node in graph.module2node.values()}
    output_nodes = {graph.module2node.get(produced.get(g)) or node_of.get(g) for g in output_grad_fns}
    return graph, _Boundary(frozenset(output_nodes - {None}), frozenset(fed_by_input))


def _passes_channels(module: Any) -> bool:
    """Whether the node's output channels are its input channels (everything but conv and linear layers)."""
    if isinstance(module, _ConvNd):
        return module.groups > 1  # depthwise (other grouped convs are refused by _members)
    return not isinstance(module, nn.Linear)


def _touches_model_boundary(graph: tp.DependencyGraph, boundary: _Boundary, group: Any) -> bool:
    """Whether removing the group would change the width of a model output or of a model input."""
    for dep, _ in group:
        node = dep.target
        out_side = graph.is_out_channel_pruning_fn(dep.handler)
        if node.type == tp.ops.OPTYPE.OUTPUT or (out_side and not node.outputs):
            return True
        if node in boundary.output_nodes and (out_side or _passes_channels(node.module)):
            return True
        if node.module in boundary.fed_by_input and (not out_side or _passes_channels(node.module)):
            return True
    return False


def _members(graph: tp.DependencyGraph, group: Any) -> tuple[ChannelSlice, ...]:
    members = []
    for item in group:
        module = item.dep.target.module
        if isinstance(module, nn.Parameter):  # named by DepGraph or not, no layer owns its slicing
            raise UnsupportedChannelFlowError(
                "structured pruning refused: a free-standing parameter "
                f"{graph._param_to_name.get(module, '?')!r} is coupled to pruned channels"
            )
        name = graph._module2name.get(module)
        if name is None:  # an operation node (add, relu, flatten ...) without parameters
            continue
        if not isinstance(module, _SUPPORTED_LAYERS):
            if any(True for _ in module.parameters(recurse=False)) or any(
                True for _ in module.buffers(recurse=False)
            ):
                raise UnsupportedChannelFlowError(
                    f"structured pruning refused: layer {name!r} ({type(module).__name__}) is coupled to "
                    "pruned channels, and only conv, linear and BatchNorm layers are supported"
                )
            continue
        dim = (
            "out"
            if graph.is_out_channel_pruning_fn(item.dep.handler) or isinstance(module, _BatchNorm)
            else "in"
        )
        if isinstance(module, _ConvNd) and module.groups > 1:
            if module.transposed:
                raise UnsupportedChannelFlowError(
                    f"structured pruning refused: grouped transposed conv {name!r} "
                    f"({type(module).__qualname__}, groups={module.groups}) is coupled to pruned channels, "
                    "and only ungrouped transposed convs are supported; prune the model unstructured "
                    "(global_magnitude_prune) instead"
                )
            if not module.groups == module.in_channels == module.out_channels:
                raise UnsupportedChannelFlowError(
                    f"structured pruning refused: grouped conv {name!r} ({type(module).__qualname__}, "
                    f"groups={module.groups}) is not depthwise, and its channels cannot be removed group by "
                    "group; prune the model unstructured (global_magnitude_prune) instead"
                )
        members.append(
            ChannelSlice(name, dim, tuple(int(i) for i in item.idxs), tuple(int(i) for i in item.root_idxs))
        )
    return tuple(members)


def coupled_channel_groups(
    model: nn.Module,
    example_inputs: Any,
    *,
    root_types: tuple[type[nn.Module], ...] = (nn.Conv2d,),
    ignored_layers: Sequence[str] = (),
) -> list[ChannelGroup]:
    """Return every prunable group of coupled channels, rooted at layers of ``root_types``.

    Groups are left out when they hold channels of a model output (any tensor the model returns, e.g. the
    classifier's logits or a returned hidden state), input channels of a layer fed by a model input (a
    layer applied to its own output), or an ignored layer's output channels.

    Args:
        model: The model (unchanged); a wrapped model is traced unwrapped, and the groups name the layers
            of :func:`~slimtrain._wrappers.unwrap_model`'s model.
        example_inputs: An input tensor, a tuple of positional inputs or a dict of keyword inputs used to
            trace the model.
        root_types: Layer types whose output channels may be pruned.
        ignored_layers: Qualified names of layers whose output channels must be kept.

    Returns:
        Groups in module order; each channel of the model belongs to at most one group.

    Raises:
        UnsupportedChannelFlowError: The model cannot be pruned structurally (see :func:`check_channel_flow`).
    """
    model = unwrap_model(model)
    graph, boundary = _build_graph(model, example_inputs)
    ignored = [model.get_submodule(name) for name in ignored_layers]
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    groups = []
    with _traced(model):
        for group in graph.get_all_groups(ignored_layers=ignored, root_module_types=root_types):
            if _touches_model_boundary(graph, boundary, group):
                continue
            root = group[0].dep.target.module
            groups.append(ChannelGroup(graph._module2name[root], len(group[0].idxs), _members(graph, group)))
    return sorted(groups, key=lambda g: order[g.root])


def remove_channels_in_place(
    model: nn.Module, example_inputs: Any, selections: Sequence[tuple[str, Sequence[int]]]
) -> None:
    """Physically remove, in ``model`` itself, the given root channels and every channel coupled to them.

    Args:
        model: The model to thin (modified); a wrapped model is thinned inside its wrapper.
        example_inputs: An input tensor, a tuple of positional inputs or a dict of keyword inputs used to
            trace the model.
        selections: ``(root layer name, root channel indices to remove)`` pairs, one per group, named by the
            unwrapped model.
    """
    model = unwrap_model(model)
    graph, _ = _build_graph(model, example_inputs)
    with _traced(model):
        for root_name, channels in selections:
            if not channels:
                continue
            root = model.get_submodule(root_name)
            pruner = graph.get_pruner_of_module(root)
            group = graph.get_pruning_group(root, pruner.prune_out_channels, sorted(int(c) for c in channels))
            if not graph.check_pruning_group(group):
                raise ValueError(
                    f"removing {len(channels)} channels of group {root_name!r} would empty a layer"
                )
            group.prune()

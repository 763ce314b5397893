"""The prunable population: which weight tensors of a model unstructured pruning removes entries from.

One registry, read by magnitude pruning, SWD, the pruning baselines and the metrics' ``prunable`` population
(docs/metrics.md#populations). A module contributes the weights its registered rule names; modules of other
types contribute nothing (their tensors are biases, normalisation parameters, embeddings, ...):

- every convolution (``torch.nn.modules.conv._ConvNd``: ``Conv1d/2d/3d``, the transposed ones) and
  ``nn.Linear``: ``weight``;
- ``nn.RNN``/``nn.LSTM``/``nn.GRU`` (``nn.RNNBase``): every ``weight_*`` of every layer and direction
  (``weight_ih_l0``, ``weight_hh_l0_reverse``, an LSTM projection's ``weight_hr_l0``); the cells
  (``nn.RNNCellBase``): ``weight_ih`` and ``weight_hh``;
- ``nn.MultiheadAttention``: ``in_proj_weight``, or ``q_proj_weight``/``k_proj_weight``/``v_proj_weight``
  when the key or value size differs from the embedding size (its ``out_proj`` is an ``nn.Linear``);
- Hugging Face's ``transformers.pytorch_utils.Conv1D`` (GPT-2's transposed linear): ``weight``, recognised
  by its qualified class name so that slimtrain never imports ``transformers``.

A rule is found along the module's class MRO, the most derived class first, so subclasses are recognised;
:func:`register_prunable` adds a rule, keyed by a class or by a qualified class name (``"package.module.
Class"``) for classes slimtrain must not import.

A shared (tied) tensor is one member, under its first name (``model.named_parameters()`` order,
:mod:`slimtrain._shared_params`), and is prunable when any of its aliases is a prunable weight. A weight
computed from other tensors — a ``torch.nn.utils.parametrize`` parametrization (``weight_norm``) or a
``torch.nn.utils.prune`` mask — is one member under its module's name (``"fc.weight"``) whose tensor is the
effective weight. Pruning it makes it a plain parameter first (:func:`make_plain`: the parametrization
removed, its current value kept), in a pruned copy (:func:`slimtrain.compress.apply_masks`) or at SWD's final
pruning; an operation that holds masks in place during training refuses it (:func:`refuse_computed`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from torch import Tensor, nn
from torch.nn.utils import parametrize, prune

from slimtrain._shared_params import first_names
from slimtrain.errors import UnsupportedModelError

__all__ = [
    "PRUNABLE_TYPES",
    "WeightNames",
    "computed_weight",
    "is_computed",
    "is_trainable",
    "make_plain",
    "prunable_weight_names",
    "prunable_weights",
    "refuse_computed",
    "register_prunable",
]

WeightNames = Callable[[nn.Module], Iterable[str]]
"""A registry rule: the local names of a module's prunable weights (``lambda m: ("weight",)``)."""

PRUNABLE_TYPES: dict[type[nn.Module] | str, WeightNames] = {}
"""The registry: a class, or a qualified class name (``"transformers.pytorch_utils.Conv1D"``), → its rule."""


def register_prunable(kind: type[nn.Module] | str, weight_names: WeightNames) -> None:
    """Declare which weights of modules of ``kind`` (and of its subclasses) are prunable.

    Args:
        kind: A module class, or the qualified name ``"<module>.<qualname>"`` of a class slimtrain must not
            import; a name matches a class whose ``__module__`` and ``__qualname__`` give it.
        weight_names: Returns the local names of a module's prunable weights (``None`` entries are skipped).

    Raises:
        TypeError: If ``kind`` is neither a module class nor a string, or ``weight_names`` is not callable.
    """
    if not (isinstance(kind, str) or (isinstance(kind, type) and issubclass(kind, nn.Module))):
        raise TypeError(f"kind must be an nn.Module subclass or a qualified class name, got {kind!r}")
    if not callable(weight_names):
        raise TypeError(f"weight_names must be callable, got {weight_names!r}")
    PRUNABLE_TYPES[kind] = weight_names


def _rule(module: nn.Module) -> WeightNames | None:
    for cls in type(module).__mro__:
        rule = PRUNABLE_TYPES.get(cls) or PRUNABLE_TYPES.get(f"{cls.__module__}.{cls.__qualname__}")
        if rule is not None:
            return rule
    return None


def prunable_weight_names(module: nn.Module) -> tuple[str, ...]:
    """The local names of ``module``'s own prunable weights that hold a tensor (``()`` when it has none)."""
    rule = _rule(module)
    if rule is None:
        return ()
    return tuple(name for name in rule(module) if isinstance(getattr(module, name, None), Tensor))


def _computing_hook(module: nn.Module, name: str) -> object | None:
    """The forward pre-hook computing ``module.<name>`` (a pruning mask, the old ``weight_norm``), if any."""
    for hook in module._forward_pre_hooks.values():
        if name in (getattr(hook, "_tensor_name", None), getattr(hook, "name", None)):
            return hook
    return None


def is_computed(module: nn.Module, name: str) -> bool:
    """Whether ``module.<name>`` is computed from other tensors: by a parametrization or a forward pre-hook.

    A plain tensor that is not a parameter (a buffer, or a weight inside ``torch.func.functional_call``) is
    not computed: it is pruned as it is.
    """
    return parametrize.is_parametrized(module, name) or _computing_hook(module, name) is not None


def _underlying(module: nn.Module, name: str) -> list[nn.Parameter]:
    """The parameters a computed weight is computed from (its parametrization's originals, or ``_orig``)."""
    if parametrize.is_parametrized(module, name):
        return list(module.parametrizations[name].parameters())
    orig = getattr(module, name + "_orig", None)
    return [orig] if isinstance(orig, nn.Parameter) else []


def computed_weight(module: nn.Module, name: str) -> Tensor:
    """The current value of the computed weight ``module.<name>``, computed now.

    With gradients enabled it carries its graph to the tensors it is computed from; it is never a value cached
    by the last forward pass (a ``torch.nn.utils.prune`` hook leaves one).

    Raises:
        UnsupportedModelError: If the weight is computed by a forward hook other than a pruning mask (the
            deprecated ``torch.nn.utils.weight_norm``), which slimtrain cannot recompute or fold.
    """
    if parametrize.is_parametrized(module, name):
        return getattr(module, name)
    hook = _computing_hook(module, name)
    if isinstance(hook, prune.BasePruningMethod):
        return hook.apply_mask(module)
    raise UnsupportedModelError(
        f"{type(module).__name__} computes its {name!r} in a forward hook slimtrain cannot follow (the "
        "deprecated torch.nn.utils.weight_norm?); use torch.nn.utils.parametrizations.weight_norm, or remove "
        "the hook"
    )


def is_trainable(module: nn.Module, name: str) -> bool:
    """Whether training updates ``module.<name>``: it, or a parameter it is computed from, requires grad."""
    if is_computed(module, name):
        return any(p.requires_grad for p in _underlying(module, name))
    return getattr(module, name).requires_grad


def prunable_weights(model: nn.Module, *, trainable_only: bool = False) -> dict[str, Tensor]:
    """Every prunable weight of ``model``, by first name, in ``named_parameters`` order.

    The order is the position order by which magnitude ties are broken. A plain weight maps to its
    ``nn.Parameter``; a computed one (see the module docstring) to its effective tensor, under
    ``"<module>.<name>"``, at the position of the first parameter it is computed from.

    Args:
        model: Any module.
        trainable_only: Leave out frozen weights (``requires_grad=False``, or computed from frozen
            tensors): the population of the training methods, which leave frozen parameters alone.

    Returns:
        First name → tensor; empty when the model has no prunable weight.

    Raises:
        UnsupportedModelError: A weight computed by a hook slimtrain cannot follow (:func:`computed_weight`),
            naming the module path.
    """
    order = {id(p): i for i, p in enumerate(model.parameters())}
    first = first_names(model)
    found: dict[str, tuple[int, Tensor]] = {}
    for module_name, module in model.named_modules():
        prefix = f"{module_name}." if module_name else ""
        for name in prunable_weight_names(module):
            tensor = getattr(module, name)
            if is_computed(module, name):
                try:  # an unknown hook is refused before the trainable filter could drop it silently
                    tensor = computed_weight(module, name)
                except UnsupportedModelError as error:
                    raise UnsupportedModelError(f"module {module_name!r}: {error}") from None
            if trainable_only and not is_trainable(module, name):
                continue
                position = min(
                    (order[id(p)] for p in _underlying(module, name) if id(p) in order), default=-1
                )
                found.setdefault(prefix + name, (position, tensor))
            else:
                found.setdefault(first.get(prefix + name, prefix + name), (order.get(id(tensor), -1), tensor))
    return {name: tensor for name, (_, tensor) in sorted(found.items(), key=lambda item: item[1][0])}


def refuse_computed(model: nn.Module, what: str) -> None:
    """Raise if a prunable weight of ``model`` is computed, for operations that write weights in place.

    Args:
        model: The model.
        what: The operation, for the message (``"SWD"``).

    Raises:
        UnsupportedModelError: Naming the module path, its type and how to make the weight plain.
    """
    for module_name, module in model.named_modules():
        for name in prunable_weight_names(module):
            if is_computed(module, name):
                raise UnsupportedModelError(
                    f"{what} writes prunable weights in place, but {module_name or '<root>'!r} "
                    f"({type(module).__name__}) computes its {name!r} from other tensors (a torch.nn.utils."
                    "parametrize parametrization or a torch.nn.utils.prune mask); make it a plain parameter "
                    f"first: torch.nn.utils.parametrize.remove_parametrizations(module, {name!r}) or "
                    f"torch.nn.utils.prune.remove(module, {name!r})"
                )


def make_plain(module: nn.Module, name: str) -> bool:
    """Turn the computed tensor ``module.<name>`` into a plain parameter holding its current value, in place.

    A parametrization is removed with ``leave_parametrized=True``; a ``torch.nn.utils.prune`` mask is folded.

    Returns:
        Whether ``module.<name>`` was computed (by a parametrization or a pruning hook).
    """
    if parametrize.is_parametrized(module, name):
        # Removal deletes the tensor's property from the module's class, which every deep copy of the model
        # shares: give this module its own class first, or the other copies lose their `weight`.
        cls = type(module)
        own = {k: v for k, v in vars(cls).items() if k not in ("__dict__", "__weakref__")}
        module.__class__ = type(cls.__name__, cls.__bases__, own)
        parametrize.remove_parametrizations(module, name, leave_parametrized=True)
        return True
    if isinstance(_computing_hook(module, name), prune.BasePruningMethod):
        prune.remove(module, name)
        return True
    return False


def _weight(module: nn.Module) -> tuple[str, ...]:
    return ("weight",)


def _rnn_weights(module: nn.Module) -> tuple[str, ...]:
    return tuple(n for n in module._flat_weights_names if n.startswith("weight"))


def _attention_weights(module: nn.Module) -> tuple[str, ...]:
    if module.in_proj_weight is not None:
        return ("in_proj_weight",)
    return ("q_proj_weight", "k_proj_weight", "v_proj_weight")


register_prunable(nn.modules.conv._ConvNd, _weight)
register_prunable(nn.Linear, _weight)
register_prunable(nn.RNNBase, _rnn_weights)
register_prunable(nn.RNNCellBase, lambda m: ("weight_ih", "weight_hh"))
register_prunable(nn.MultiheadAttention, _attention_weights)
register_prunable("transformers.pytorch_utils.Conv1D", _weight)

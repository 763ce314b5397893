"""Which layers a factorization or sparse-storage conversion may replace: one rule for every such operator.

:func:`slimtrain.compress.svd_decompose`, :func:`~slimtrain.compress.tucker_decompose`,
:func:`~slimtrain.compress.to_sparse_linear` and :func:`slimtrain.lowrank.convert_to_lowrank` replace a layer
by a new module, which keeps the layer's function only if nothing else depends on how the layer is built.
A layer is replaced only if all of these hold:

- it is an instance of a type the operator supports (``nn.Conv2d``, ``nn.Linear``), and its class is that
  type, a subclass that defines no ``forward`` / ``_conv_forward`` of its own, or a subclass registered in
  :data:`REPLACEABLE_SUBCLASSES` (it computes what its base type computes);
- it is not a child of a module that reads its parameters directly instead of calling it (registered in
  :data:`PARAMETER_READERS`: ``nn.MultiheadAttention`` reads ``out_proj.weight``);
- its weight is not parametrized (``torch.nn.utils.parametrize``, ``weight_norm``) and it has no forward
  hooks (``torch.nn.utils.prune``), which a replacement would drop;
- it is not the model itself (wrap it in a container), and the operator supports its configuration
  (groups, padding mode).

With the default selection, layers of the operator's family that fail the rule are left as they are and
named, with the reason, in one :class:`LayersLeftDenseWarning` per call; a layer named explicitly that fails
it is refused with :class:`~slimtrain.errors.UnsupportedModelError`, and so is a call that finds nothing to
replace. See ``docs/export.md`` ("Which layers are replaced").
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from torch import nn
from torch.nn.modules.conv import _ConvNd
from torch.nn.utils import parametrize

from slimtrain._wrappers import unwrap_model
from slimtrain.errors import BadInputError, UnknownNameError, UnsupportedModelError
from slimtrain.registry import Registry

__all__ = [
    "CONVOLUTIONS",
    "LINEARS",
    "PARAMETER_READERS",
    "REPLACEABLE_SUBCLASSES",
    "Family",
    "LayersLeftDenseWarning",
    "LeftDense",
    "Replacement",
    "register_parameter_reader",
    "register_replaceable_subclass",
    "replacement_refusal",
    "select_replaceable",
    "some_names",
]

REPLACEABLE_SUBCLASSES: Registry[type[nn.Module]] = Registry("replaceable layer subclass")
"""Subclasses of ``nn.Conv2d`` / ``nn.Linear`` with an own ``forward`` that computes what the base's does."""

PARAMETER_READERS: Registry[type[nn.Module]] = Registry("parameter-reading module")
"""Module types that read their children's parameters directly: their children are never replaced."""


def _key(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


Family = tuple[type[nn.Module] | str, ...]
"""Layer types, or qualified names (``"<module>.<qualname>"``) of classes slimtrain must not import."""

CONVOLUTIONS: Family = (_ConvNd,)
"""Every convolution: the family a conv operator names when it leaves one dense."""

LINEARS: Family = (nn.Linear, "transformers.pytorch_utils.Conv1D")
"""Every linear, Hugging Face's ``Conv1D`` (GPT-2's transposed linear) included."""


def _in_family(module: nn.Module, family: Family) -> bool:
    return any(cls in family or _key(cls) in family for cls in type(module).__mro__)


def register_replaceable_subclass(cls: type[nn.Module]) -> type[nn.Module]:
    """Declare that ``cls``, a subclass of a supported layer type with its own ``forward``, may be replaced.

    Use it (also as a class decorator) for a subclass whose ``forward`` computes exactly what its base type's
    does (a faster kernel, logging), so that factorizations and sparse storage replace its instances.

    Returns:
        ``cls``.
    """
    return REPLACEABLE_SUBCLASSES.register(_key(cls), cls, replace=True)


def register_parameter_reader(cls: type[nn.Module]) -> type[nn.Module]:
    """Declare that modules of type ``cls`` read their children's parameters directly (never replace them).

    Returns:
        ``cls``.
    """
    return PARAMETER_READERS.register(_key(cls), cls, replace=True)


register_parameter_reader(nn.MultiheadAttention)


class LayersLeftDenseWarning(UserWarning):
    """Layers an operator would replace by default were left as they are; the message names each and why."""


@dataclass(frozen=True)
class LeftDense:
    """A layer left as it is: its path in ``named_modules``, its type and the reason."""

    path: str
    type_name: str
    reason: str

    def __str__(self) -> str:
        return f"layer {self.path!r} ({self.type_name}): {self.reason}"


@dataclass(frozen=True)
class Replacement:
    """What one replacing operator supports.

    Attributes:
        what: The operation, for messages (``"SVD factorization"``).
        types: The layer types it replaces (instances of subclasses under the rule).
        family: The types (or qualified class names) whose instances, left as they are by default, are named
            in the warning: :data:`CONVOLUTIONS` (``Conv1d`` and transposed ones included) and/or
            :data:`LINEARS`.
        family_name: The family in words (``"convolution or linear"``).
        check: Operator-specific limits: the reason a supported layer cannot be replaced, or ``None``.
        inside: Layer types whose sub-modules are never selected by default (an operator's own output).
    """

    what: str
    types: tuple[type[nn.Module], ...]
    family: Family
    family_name: str
    check: Callable[[nn.Module], str | None] | None = None
    inside: tuple[type[nn.Module], ...] = ()


def _own_forward(module: nn.Module, base: type[nn.Module]) -> type | None:
    """The class between ``type(module)`` and ``base`` that defines its own forward (unregistered), if any."""
    registered = {cls for _, cls in REPLACEABLE_SUBCLASSES.items()}
    for cls in type(module).__mro__:
        if cls is base or cls in registered:
            return None
        if "forward" in vars(cls) or "_conv_forward" in vars(cls):
            return cls
    return None


def replacement_refusal(
    operator: Replacement, path: str, module: nn.Module, parent: nn.Module | None, parent_path: str = ""
) -> str | None:
    """Why ``operator`` may not replace ``module`` (at ``path``, a child of ``parent``); ``None``: it may."""
    if not path:
        return "it is the model itself; wrap it in a container such as nn.Sequential(model)"
    if parent is not None and unwrap_model(parent) is module:
        # torch.compile's wrapper keeps calling the module it compiled, whatever its attribute then holds.
        return (
            f"it is the model inside the {type(parent).__name__} wrapper itself; wrap it in a container such "
            "as nn.Sequential(model) before wrapping it"
        )
    base = next((t for t in operator.types if isinstance(module, t)), None)
    if base is None:
        supported = " and ".join(f"nn.{t.__name__}" for t in operator.types)
        return f"{operator.what} replaces {supported} layers only"
    if parametrize.is_parametrized(module):
        return (
            "its parameters are parametrized (torch.nn.utils.parametrize, e.g. weight_norm), which a "
            "replacement would drop; fold them into plain weights first (slimtrain.compress.fold_masks)"
        )
    if module._forward_hooks or module._forward_pre_hooks:
        return (
            "it has forward hooks (e.g. torch.nn.utils.prune, the old weight_norm), which a replacement "
            "would drop; remove them first (slimtrain.compress.fold_masks folds pruning masks)"
        )
    own = _own_forward(module, base)
    if own is not None:
        return (
            f"{own.__qualname__} subclasses nn.{base.__name__} with its own forward, which a replacement "
            "would drop; if it computes exactly what its base does, register it with "
            "slimtrain.layers.register_replaceable_subclass"
        )
    if parent is not None and isinstance(parent, tuple(cls for _, cls in PARAMETER_READERS.items())):
        return (
            f"its owner {parent_path or '<root>'!r} ({type(parent).__name__}) reads its parameters directly "
            "instead of calling it; its weight can still be pruned (magnitude pruning, SWD)"
        )
    return operator.check(module) if operator.check is not None else None


def some_names(names: Iterable[str], limit: int = 8) -> str:
    """``"valid names: 'a', 'b', ... (N in all)"``: a few of ``names`` for an unknown-name message."""
    names = list(names)
    if not names:
        return "it has none"
    shown = ", ".join(map(repr, names[:limit]))
    return f"valid names: {shown}" + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def _parents(model: nn.Module) -> dict[str, tuple[str, nn.Module]]:
    """``path → (parent path, parent)`` for every sub-module of ``model``."""
    return {
        f"{path}.{name}" if path else name: (path, module)
        for path, module in model.named_modules()
        for name, _ in module.named_children()
    }


def select_replaceable(
    model: nn.Module,
    operator: Replacement,
    layers: Iterable[str] | None = None,
    *,
    excluded: Mapping[str, str] | None = None,
    stacklevel: int = 3,
) -> list[str]:
    """The paths of the layers ``operator`` replaces in ``model``, by the rule of this module.

    Args:
        model: The model.
        operator: What the operator supports.
        layers: Paths named by the user (each must pass the rule), or ``None`` for every layer of the
            operator's family that passes it.
        excluded: Paths the user's options keep as they are (``skip=``), with the option, for the message
            of a call that finds nothing; they are not warned about.
        stacklevel: Of the warning, for it to point at the operator's caller.

    Returns:
        The selected paths, in ``named_modules`` order for the default selection.

    Raises:
        UnknownNameError: Named layers that do not exist (all of them, with some of the layers the operator
            replaces; a ``BadInputError`` and ``KeyError``).
        UnsupportedModelError: A named layer fails the rule (its path, type, the reason and what to do), or
            nothing is left to replace (every layer of the family, each with its reason).
    """
    parents = _parents(model)
    if layers is not None:
        names = list(layers)
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:  # the second time, the replacement itself would be replaced
            raise BadInputError(f"{operator.what}: layers= names {', '.join(map(repr, repeated))} twice")
        modules = dict(model.named_modules(remove_duplicate=False))
        unknown = [name for name in names if name not in modules]
        if unknown:
            valid = [path for path, module in modules.items() if path and _in_family(module, operator.family)]
            raise UnknownNameError(
                f"{operator.what}: layers= names {', '.join(map(repr, unknown))}, which "
                f"{type(model).__qualname__} does not have; {some_names(valid)}"
            )
        for name in names:
            module = modules[name]
            parent_path, parent = parents.get(name, ("", None))
            reason = replacement_refusal(operator, name, module, parent, parent_path)
            if reason is not None:
                raise UnsupportedModelError(
                    f"{operator.what} cannot replace {LeftDense(name, type(module).__qualname__, reason)}; "
                    "leave it out of layers="
                )
        return names
    excluded = dict(excluded or {})
    inside = {
        f"{path}.{sub}" if path else sub
        for path, m in model.named_modules()
        if operator.inside and isinstance(m, operator.inside)
        for sub, _ in m.named_modules()
        if sub
    }
    names, left, kept = [], [], []
    for path, module in model.named_modules():
        if path in inside or not _in_family(module, operator.family):
            continue
        if path in excluded:
            kept.append(LeftDense(path, type(module).__qualname__, excluded[path]))
            continue
        parent_path, parent = parents.get(path, ("", None))
        reason = replacement_refusal(operator, path, module, parent, parent_path)
        if reason is None:
            names.append(path)
        else:
            left.append(LeftDense(path, type(module).__qualname__, reason))
    if not names:
        listed = "; ".join(map(str, left + kept)) or f"the model has no {operator.family_name} layer"
        raise UnsupportedModelError(
            f"{operator.what}: nothing to replace in {type(model).__qualname__}: {listed} (docs/export.md, "
            "'Which layers are replaced', says which layers can be)"
        )
    if left:
        warnings.warn(
            f"{operator.what} left {len(left)} layer(s) as they are: " + "; ".join(map(str, left)),
            LayersLeftDenseWarning,
            stacklevel=stacklevel,
        )
    return names

"""The export protocol: how a layer is recorded in an export manifest and rebuilt from it.

Every layer type an exported model may contain is registered in :data:`LAYER_TYPES` under a namespaced key
(``"torch.nn.Conv2d"``, ``"slimtrain.TuckerConv2d"``, ``"mypackage.MyLayer"``) with two functions: ``config``
(the module's JSON constructor arguments) and ``build`` (a new module from them). A module is recognised by
``isinstance`` through its class's method resolution order, so a subclass of a registered type is known too;
since a subclass may compute something else (its own ``forward``), it is never rebuilt from the base type's
constructor: an export only records a new *shape* for it, and loading re-shapes the base model's own instance
(:func:`reshape_layer`), which keeps its class and behaviour.

Third-party layers are added with :func:`register_layer_type` (or the ``slimtrain.layers`` entry-point group);
a class with a ``config()`` method and a ``from_config`` classmethod (or keyword constructor) needs no more.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from torch import nn

from slimtrain.errors import UnsupportedModelError
from slimtrain.registry import Registry

__all__ = [
    "LAYER_TYPES",
    "V1_TYPE_NAMES",
    "LayerType",
    "TrainingLayer",
    "build_layer",
    "layer_config",
    "layer_type_of",
    "register_layer_type",
    "reshape_layer",
]


@dataclass(frozen=True)
class LayerType:
    """A registered layer type: its manifest key, class, and config/build functions.

    Attributes:
        key: Namespaced manifest key (``"<package>.<Class>"``).
        cls: The class; instances of subclasses are recognised too.
        config: ``module → dict`` of JSON-serialisable constructor arguments.
        build: ``(**config) → module``.
    """

    key: str
    cls: type[nn.Module]
    config: Callable[[nn.Module], dict[str, Any]]
    build: Callable[..., nn.Module]


@runtime_checkable
class TrainingLayer(Protocol):
    """A layer used only while training (TDLRT / DLRT factor form) that an export replaces by another."""

    def to_deployment(self) -> nn.Module:
        """The registered deployment layer computing the same function."""
        ...


LAYER_TYPES: Registry[LayerType] = Registry("layer type", entry_point_group="slimtrain.layers")
"""Manifest key → :class:`LayerType` of every layer an exported model may replace or re-shape."""

V1_TYPE_NAMES: dict[str, str] = {}
"""Format-1 manifests recorded bare class names; each maps to its key here (filled by the registrations)."""


def register_layer_type(
    key: str,
    cls: type[nn.Module],
    *,
    config: Callable[[nn.Module], dict[str, Any]] | None = None,
    build: Callable[..., nn.Module] | None = None,
    v1_name: str | None = None,
    replace: bool = False,
) -> LayerType:
    """Register ``cls`` under the manifest key ``key``.

    Args:
        key: Namespaced key, ``"<package>.<Class>"``.
        cls: The layer class.
        config: Its JSON constructor arguments; default ``module.config()``.
        build: Builds a module from them; default ``cls.from_config(**config)`` if defined, else
            ``cls(**config)``.
        v1_name: The bare name format-1 manifests used for this type (slimtrain's own types only).
        replace: Replace an existing registration of ``key``.

    Returns:
        The registered :class:`LayerType`.

    Raises:
        ValueError: ``key`` is not namespaced, is taken (without ``replace``), or ``cls`` has no config.
    """
    if "." not in key:
        raise ValueError(f"layer type keys are namespaced ('<package>.<Class>'), got {key!r}")
    if config is None:
        if not callable(getattr(cls, "config", None)):
            raise ValueError(f"{cls.__qualname__} has no config() method; pass config=")
        config = cls.config  # type: ignore[attr-defined]
    if build is None:
        build = getattr(cls, "from_config", cls)
    entry = LAYER_TYPES.register(key, LayerType(key, cls, config, build), replace=replace)
    if v1_name is not None:
        V1_TYPE_NAMES[v1_name] = key
    return entry


def layer_type_of(module: nn.Module) -> LayerType | None:
    """The registered type ``module`` is an instance of (its nearest registered class), or ``None``."""
    by_class = {entry.cls: entry for _, entry in LAYER_TYPES.items()}
    for cls in type(module).__mro__:
        if cls in by_class:
            return by_class[cls]
    return None


def layer_config(module: nn.Module) -> dict[str, Any]:
    """The JSON constructor arguments of ``module`` under its registered type.

    Raises:
        UnsupportedModelError: ``module`` is not an instance of a registered layer type.
    """
    entry = layer_type_of(module)
    if entry is None:
        raise UnsupportedModelError(
            f"{type(module).__qualname__} is not a registered layer type (slimtrain.layers.LAYER_TYPES: "
            f"{', '.join(LAYER_TYPES.names())}); register it with slimtrain.layers.register_layer_type"
        )
    return entry.config(module)


def resolve_key(key: str) -> str:
    """``key``, or the key a format-1 bare class name stands for."""
    return V1_TYPE_NAMES.get(key, key)


def build_layer(key: str, config: dict[str, Any]) -> nn.Module:
    """A new layer of the registered type ``key`` (or a format-1 bare name) from its config.

    Raises:
        UnknownNameError: No such layer type (the message lists the registered keys).
        ValueError: The arguments do not fit the type's constructor.
    """
    entry = LAYER_TYPES.get(resolve_key(key))
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}
    try:
        return entry.build(**kwargs)
    except (TypeError, ValueError) as error:
        raise ValueError(f"cannot build {key} from {config}: {error}") from error


def reshape_layer(module: nn.Module, key: str, config: dict[str, Any]) -> None:
    """Give ``module`` (an instance of the registered type ``key``, or of a subclass) the shape ``config``.

    A module of the plain type is built from ``config`` and its hyper-parameters, parameters and buffers are
    moved into ``module``; ``module`` keeps its class, hooks and ``forward``. Only layers without children can
    be re-shaped (the built-in convolutions, linears and normalizations).

    Raises:
        UnsupportedModelError: ``module`` is not an instance of ``key``'s class, or has children.
    """
    entry = LAYER_TYPES.get(resolve_key(key))
    if not isinstance(module, entry.cls) or next(module.children(), None) is not None:
        raise UnsupportedModelError(
            f"cannot re-shape a {type(module).__qualname__} as {key}: only childless instances of "
            f"{entry.cls.__qualname__} can be"
        )
    fresh = build_layer(key, config)  # its tensors only give shapes: the export's weights are loaded after
    # Hyper-parameters named like the constructor arguments, plus the padding a conv derives from them.
    for attribute in [*config, "_reversed_padding_repeated_twice"]:
        if attribute != "bias" and hasattr(fresh, attribute):
            setattr(module, attribute, getattr(fresh, attribute))
    module._parameters.clear()
    module._parameters.update(fresh._parameters)
    module._buffers.clear()
    module._buffers.update(fresh._buffers)

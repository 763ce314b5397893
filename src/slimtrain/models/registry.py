"""Model registry: name → factory, with validation of the factory's keyword arguments.

Every factory has the signature ``fn(num_classes, in_channels, image_size, *, <options>)``; the keyword-only
options with their defaults are the model's valid ``kwargs``. A factory that also takes ``**kwargs`` accepts
any option and validates it itself.

The names live in a :class:`slimtrain.registry.Registry` of kind ``"model"``; installed packages add models
without being imported by slimtrain through the entry-point group ``slimtrain.models`` (each entry point
names a factory; its name is the model's name).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

from slimtrain.models.validation import check_positive_int
from slimtrain.registry import Registry

__all__ = ["MODELS", "ModelFactory", "create_model", "list_models", "register_model"]

#: ``factory(num_classes, in_channels, image_size, **options) -> nn.Module``.
ModelFactory = Callable[..., nn.Module]
FactoryT = TypeVar("FactoryT", bound=ModelFactory)

_COMMON_ARGUMENTS = ("num_classes", "in_channels", "image_size")
MODELS: Registry[ModelFactory] = Registry("model", entry_point_group="slimtrain.models")


def _check_signature(name: str, factory: ModelFactory) -> None:
    """Refuse a factory whose first three parameters are not the common arguments."""
    leading = list(inspect.signature(factory).parameters)[: len(_COMMON_ARGUMENTS)]
    if tuple(leading) != _COMMON_ARGUMENTS:
        qualname = getattr(factory, "__qualname__", repr(factory))
        raise ValueError(
            f"factory {qualname} for model {name!r} must start with the parameters "
            f"{', '.join(_COMMON_ARGUMENTS)}; it starts with {', '.join(leading) or 'none'}"
        )


def _factory_options(factory: ModelFactory) -> tuple[list[str], bool]:
    """Return the names of a factory's options and whether it also takes arbitrary ``**kwargs``."""
    parameters = list(inspect.signature(factory).parameters.values())
    options = [p.name for p in parameters[len(_COMMON_ARGUMENTS) :] if p.kind is not p.VAR_KEYWORD]
    open_ended = any(p.kind is p.VAR_KEYWORD for p in parameters)
    return options, open_ended


def register_model(name: str, *, replace: bool = False) -> Callable[[FactoryT], FactoryT]:
    """Register a model factory under ``name`` (decorator).

    Args:
        name: The name :func:`create_model` looks the factory up by.
        replace: Allow another factory to take over a registered name.

    Returns:
        A decorator that registers the factory and returns it unchanged.

    Raises:
        ValueError: If ``name`` is already registered to another factory (and ``replace`` is false), or the
            factory's first three parameters are not ``num_classes, in_channels, image_size``.

    Example:
        >>> @register_model("my_linear")
        ... def my_linear(num_classes, in_channels, image_size, *, bias=True):
        ...     features = in_channels * image_size**2
        ...     return nn.Sequential(nn.Flatten(), nn.Linear(features, num_classes, bias=bias))
    """

    def decorator(factory: FactoryT) -> FactoryT:
        _check_signature(name, factory)
        MODELS.register(name, factory, replace=replace)
        return factory

    return decorator


def list_models() -> list[str]:
    """Return the names of all registered models, sorted."""
    return MODELS.names()


def create_model(
    name: str, *, num_classes: int = 10, in_channels: int = 3, image_size: int = 32, **kwargs: Any
) -> nn.Module:
    """Build a registered model for square ``in_channels × image_size × image_size`` inputs.

    Args:
        name: A name from :func:`list_models`.
        num_classes: Number of output logits.
        in_channels: Channels of the input images.
        image_size: Height (= width) of the input images.
        **kwargs: Model-specific options (see ``docs/models.md`` or the factory's docstring).

    Returns:
        The freshly initialised model, in training mode. Its initialisation uses only the global torch RNG,
        so the same ``torch.manual_seed`` gives identical weights.

    Raises:
        UnknownNameError: If the name is unknown (a ``ValueError``; the message lists the registered names).
        ValueError: If an option is unknown (the message names it and lists the valid options), a common
            argument is not a positive integer, or the factory rejects the configuration (e.g. an image too
            small for the model); the message starts with the model's name.
    """
    factory = MODELS.get(name)
    _check_signature(name, factory)  # entry-point factories are not checked at registration
    options, open_ended = _factory_options(factory)
    unknown = sorted(set(kwargs) - set(options))
    if unknown and not open_ended:
        raise ValueError(
            f"unknown option(s) {', '.join(map(repr, unknown))} for model {name!r}; "
            f"valid options: {', '.join(options) or 'none'}"
        )
    for argument, value in zip(_COMMON_ARGUMENTS, (num_classes, in_channels, image_size), strict=True):
        check_positive_int(argument, value)
    try:
        return factory(num_classes, in_channels, image_size, **kwargs)
    except ValueError as error:
        raise ValueError(f"model {name!r}: {error}") from error

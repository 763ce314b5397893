"""Models (and datasets) named by import path, ``"package.module:name"``, and building a model from its base.

A *base* is what a recipe's ``model`` section names and an exported model's manifest records: a
``slimtrain.models`` registry name, or a factory — any callable returning an ``nn.Module`` (a function, an
``nn.Module`` class), or a Hugging Face ``PreTrainedModel`` class (recognised by its ``config_class``), built
as ``cls(cls.config_class(**kwargs))``. :func:`model_arguments` adds the arguments a model takes from its
dataset (``num_classes``, ``in_channels``, ``image_size``) to the user's keyword arguments, and
:func:`build_model` builds the base from the result; an export records that result, so rebuilding it needs no
dataset.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from slimtrain.errors import FactoryImportError, UnsupportedModelError
from slimtrain.models.registry import _COMMON_ARGUMENTS, ModelFactory, create_model

__all__ = ["build_model", "is_pretrained_class", "model_arguments", "resolve_factory"]

# A Hugging Face config's names for the arguments a model takes from its dataset.
_CONFIG_NAMES = {"num_classes": "num_labels", "in_channels": "num_channels", "image_size": "image_size"}


def resolve_factory(path: str) -> Callable[..., Any]:
    """Import the callable ``"package.module:name"`` names (``name`` may be dotted: ``Class.method``).

    Raises:
        FactoryImportError: If ``path`` is not of that form, the module cannot be imported (the message names
            it and why) or has no such callable.
    """
    module_name, colon, qualname = path.partition(":")
    if not colon or not module_name or not qualname:
        raise FactoryImportError(f"{path!r} is not an import path of the form 'package.module:name'")
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as error:  # a missing module, or one that fails while importing: both name the module
        raise FactoryImportError(
            f"{path!r} cannot be imported: module {module_name!r} fails to import "
            f"({type(error).__name__}: {error})"
        ) from error
    for part in qualname.split("."):
        if not hasattr(target, part):
            raise FactoryImportError(
                f"{path!r} cannot be imported: module {module_name!r} has no {qualname!r}"
            )
        target = getattr(target, part)
    if not callable(target):
        raise FactoryImportError(f"{path!r} names a {type(target).__name__}, not a callable")
    return target


def is_pretrained_class(factory: Any) -> bool:
    """Whether ``factory`` is a Hugging Face ``PreTrainedModel`` class (a class with a ``config_class``)."""
    return isinstance(factory, type) and isinstance(getattr(factory, "config_class", None), type)


def _accepts(function: Callable[..., Any], name: str) -> bool:
    """Whether ``function``'s signature names the keyword ``name`` (a ``**kwargs`` does not count)."""
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):  # no signature (a builtin): pass it nothing it might not take
        return False
    parameter = parameters.get(name)
    named = (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY) if parameter is not None else ()
    return parameter is not None and parameter.kind in named


def _takes_var_keywords(function: Callable[..., Any]) -> bool:
    """Whether ``function`` takes ``**kwargs``."""
    try:
        return any(p.kind is p.VAR_KEYWORD for p in inspect.signature(function).parameters.values())
    except (TypeError, ValueError):
        return False


def _config_settings(config_class: type) -> set[str]:
    """The settings of a Hugging Face config class.

    They are the parameters of its ``__init__``, its properties (``num_labels``) and the attributes of a
    default instance; its ``**kwargs``, which store any name, do not count.
    """
    names = set(vars(config_class()))
    for klass in config_class.__mro__:
        names.update(n for n, v in vars(klass).items() if isinstance(v, property))
    try:
        parameters = inspect.signature(config_class.__init__).parameters.values()
    except (TypeError, ValueError):
        parameters = []  # type: ignore[assignment]
    names.update(p.name for p in parameters if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL))
    return {n for n in names if not n.startswith("_")} - {"self"}


def model_arguments(
    base: str | ModelFactory, kwargs: Mapping[str, Any], common: Mapping[str, int]
) -> dict[str, Any]:
    """The keyword arguments :func:`build_model` builds ``base`` with: ``kwargs`` and the ``common`` it takes.

    Args:
        base: A registry name (which takes every common argument) or a factory.
        kwargs: The user's keyword arguments (a recipe's ``model.kwargs``).
        common: The arguments a model takes from its dataset, ``num_classes``, ``in_channels``,
            ``image_size``. A factory gets those its signature names, and a ``**kwargs`` gets ``num_classes``;
            a Hugging Face model's config gets them as ``num_labels``, ``num_channels``, ``image_size``, those
            its config class has, unless ``kwargs`` sets them.

    Raises:
        TypeError: A Hugging Face config class has no setting of a name in ``kwargs`` (it would store it and
            silently build its default model).
        ValueError: ``kwargs`` sets a Hugging Face config's ``num_labels``, ``num_channels`` or ``image_size``
            to another value than the dataset's.
    """
    unknown = sorted(set(common) - set(_COMMON_ARGUMENTS))
    if unknown:
        raise ValueError(f"unknown common argument(s) {unknown}; they are {', '.join(_COMMON_ARGUMENTS)}")
    if isinstance(base, str):
        taken = dict(common)
    elif is_pretrained_class(base):
        settings = _config_settings(base.config_class)
        # The config would store a misspelt name and build the default model instead: refused.
        unknown = sorted(set(kwargs) - settings)
        if unknown:
            raise TypeError(
                f"{base.config_class.__name__} has no setting(s) {', '.join(map(repr, unknown))}; "
                f"its settings: {', '.join(sorted(settings))}"
            )
        # The dataset decides these; a different value in kwargs would build a model that does not fit it.
        contradicting = [
            f"{_CONFIG_NAMES[name]}={kwargs[_CONFIG_NAMES[name]]!r} (the dataset gives {value})"
            for name, value in common.items()
            if _CONFIG_NAMES[name] in kwargs and kwargs[_CONFIG_NAMES[name]] != value
        ]
        if contradicting:
            raise ValueError(
                f"{', '.join(contradicting)}: leave it out of the model's kwargs, it comes from the dataset"
            )
        taken = {
            _CONFIG_NAMES[name]: value
            for name, value in common.items()
            if _CONFIG_NAMES[name] not in kwargs and _CONFIG_NAMES[name] in settings
        }
    else:
        # The arguments its signature names, and num_classes to a **kwargs too: factories that pass their
        # keywords on (torchvision's, timm's) build classifiers that take num_classes but not the others.
        taken = {
            name: value
            for name, value in common.items()
            if _accepts(base, name) or (name == "num_classes" and _takes_var_keywords(base))
        }
    return {**taken, **kwargs}


def build_model(
    base: str | ModelFactory, kwargs: Mapping[str, Any], *, label: str | None = None
) -> nn.Module:
    """Build ``base`` with ``kwargs`` (the result of :func:`model_arguments`, or an export's recorded ones).

    ``label`` names the factory in messages as the user wrote it (a recipe's ``"os:getcwd"`` rather than the
    module that defines it, ``posix``).

    A registry name goes to :func:`~slimtrain.models.create_model`, a Hugging Face model class is built as
    ``cls(cls.config_class(**kwargs))`` and any other factory is called as ``factory(**kwargs)``.

    Raises:
        UnsupportedModelError: If the factory returns something other than an ``nn.Module``.
        ValueError, TypeError: What ``create_model`` or the factory raise for bad arguments.
    """
    if isinstance(base, str):
        return create_model(base, **kwargs)
    model = base(base.config_class(**kwargs)) if is_pretrained_class(base) else base(**kwargs)
    if not isinstance(model, nn.Module):
        name = label or f"{getattr(base, '__module__', '?')}:{getattr(base, '__qualname__', repr(base))}"
        raise UnsupportedModelError(
            f"the model factory {name} returned a {type(model).__name__}, not a torch.nn.Module; "
            "make it return the model"
        )
    return model

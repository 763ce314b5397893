"""The training engine: recipes, the trainer, checkpoints and the method plugin interface.

The engine knows no plugin: methods (:mod:`slimtrain.methods` and installed packages) are found by name
through the entry-point group ``slimtrain.methods`` (see :mod:`slimtrain.train.method`). Usage and the
recipe schema: ``docs/training.md``.

Example:
    >>> from slimtrain.train import recipe_from_dict, train  # doctest: +SKIP
    >>> results = train(recipe_from_dict({"name": "demo", "train": {"epochs": 1}}))  # doctest: +SKIP

The names below are imported on first use, so ``import slimtrain.train.config`` (or any one module of the
package) stays cheap. A name equal to one of the package's modules (``evaluate``) is not exported: the
attribute is the module.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from slimtrain.train.checkpoint import CheckpointStore
    from slimtrain.train.config import Recipe, load_recipe, recipe_from_dict
    from slimtrain.train.launch import train_multiprocess
    from slimtrain.train.method import (
        Levels,
        Method,
        NoOptions,
        StepContext,
        StepOutput,
        build_standard_optimizer,
        get_method_class,
        list_methods,
        register_method,
        trainable_parameters,
    )
    from slimtrain.train.schedule import LRSchedule
    from slimtrain.train.trainer import RunComponents, Trainer, build_run, train

# Public name → the module of this package that defines it.
_EXPORTS: dict[str, str] = {
    "CheckpointStore": "checkpoint",
    "LRSchedule": "schedule",
    "Levels": "method",
    "Method": "method",
    "NoOptions": "method",
    "Recipe": "config",
    "RunComponents": "trainer",
    "StepContext": "method",
    "StepOutput": "method",
    "Trainer": "trainer",
    "build_run": "trainer",
    "build_standard_optimizer": "method",
    "get_method_class": "method",
    "list_methods": "method",
    "load_recipe": "config",
    "recipe_from_dict": "config",
    "register_method": "method",
    "train": "trainer",
    "train_multiprocess": "launch",
    "trainable_parameters": "method",
}

__all__ = [
    "CheckpointStore",
    "LRSchedule",
    "Levels",
    "Method",
    "NoOptions",
    "Recipe",
    "RunComponents",
    "StepContext",
    "StepOutput",
    "Trainer",
    "build_run",
    "build_standard_optimizer",
    "get_method_class",
    "list_methods",
    "load_recipe",
    "recipe_from_dict",
    "register_method",
    "train",
    "train_multiprocess",
    "trainable_parameters",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})

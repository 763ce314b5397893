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

from typing import TYPE_CHECKING

from slimtrain._lazy import lazy_exports

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
    "CheckpointStore": "slimtrain.train.checkpoint",
    "LRSchedule": "slimtrain.train.schedule",
    "Levels": "slimtrain.train.method",
    "Method": "slimtrain.train.method",
    "NoOptions": "slimtrain.train.method",
    "Recipe": "slimtrain.train.config",
    "RunComponents": "slimtrain.train.trainer",
    "StepContext": "slimtrain.train.method",
    "StepOutput": "slimtrain.train.method",
    "Trainer": "slimtrain.train.trainer",
    "build_run": "slimtrain.train.trainer",
    "build_standard_optimizer": "slimtrain.train.method",
    "get_method_class": "slimtrain.train.method",
    "list_methods": "slimtrain.train.method",
    "load_recipe": "slimtrain.train.config",
    "recipe_from_dict": "slimtrain.train.config",
    "register_method": "slimtrain.train.method",
    "train": "slimtrain.train.trainer",
    "train_multiprocess": "slimtrain.train.launch",
    "trainable_parameters": "slimtrain.train.method",
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


__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)

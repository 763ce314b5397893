"""slimtrain: compression-aware training for PyTorch.

Train a network once so that it can afterwards be pruned (unstructured or by whole filters) or factorized
to low rank at many levels with little accuracy lost, and export the result as a model that is really
smaller and faster.

The main entry points, imported on first use (``import slimtrain`` itself does not import torch):

- :func:`load_recipe` / :func:`recipe_from_dict` and :class:`Trainer` (``Trainer(recipe).fit()``) train a
  recipe (the engine is the subpackage :mod:`slimtrain.train`, so the training function is
  :func:`slimtrain.train.train`);
- :func:`sweep`, :func:`compare`, :func:`write_report`, :func:`export_run` and :func:`select` evaluate,
  compare, report, export trained runs and choose a level (:mod:`slimtrain.experiments`);
- :func:`load` rebuilds an exported model.

Example:
    >>> import slimtrain  # doctest: +SKIP
    >>> recipe = slimtrain.load_recipe("recipe.yaml")  # doctest: +SKIP
    >>> slimtrain.Trainer(recipe, "runs/demo").fit()  # doctest: +SKIP
    >>> rows = slimtrain.sweep("runs/demo")  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from slimtrain._lazy import lazy_exports

if TYPE_CHECKING:
    from torch import nn

    from slimtrain.experiments import compare, export_run, select, sweep, write_report
    from slimtrain.train import Trainer, load_recipe, recipe_from_dict

__version__ = "0.2.0"

# Public name → the subpackage exporting it (imported on first use).
_EXPORTS: dict[str, str] = {
    "Trainer": "slimtrain.train",
    "compare": "slimtrain.experiments",
    "export_run": "slimtrain.experiments",
    "load_recipe": "slimtrain.train",
    "recipe_from_dict": "slimtrain.train",
    "select": "slimtrain.experiments",
    "sweep": "slimtrain.experiments",
    "write_report": "slimtrain.experiments",
}

__all__ = [
    "Trainer",
    "compare",
    "export_run",
    "load",
    "load_recipe",
    "recipe_from_dict",
    "select",
    "sweep",
    "write_report",
]


__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)


def load(path: str | os.PathLike[str], *, factory: Callable[..., Any] | None = None) -> nn.Module:
    """Rebuild an exported model (``slimtrain export`` / :func:`slimtrain.compress.save_exported`).

    The architecture is rebuilt from the manifest (base model from the registry, or ``factory``, with the
    recorded keyword arguments, then the recorded layer replacements); no class is unpickled. The weights
    file's checksum and every tensor's name, shape and dtype are checked before the weights are loaded.

    Args:
        path: The exported-model directory.
        factory: The base model factory, for models saved from a factory rather than a registry name.

    Returns:
        The ``torch.nn.Module`` in eval mode. Its attribute ``slimtrain_preprocessing`` holds how inputs must
        be prepared, as the export recorded it (a dict: ``mean``, ``std``, ``input_shape`` ``[C, H, W]``,
        ``channels``, ``input_dtype``, ``num_classes``, ``class_names``; see docs/export.md), or ``None`` for
        an export that did not record it. ``slimtrain.compress.read_manifest(path)["preprocessing"]`` reads
        the same without loading the model.

    Raises:
        slimtrain.compress.ExportFormatError: A missing, corrupted or inconsistent file, naming it.
        slimtrain.errors.FactoryImportError: The recorded factory cannot be imported here (naming its module).
    """
    from slimtrain.compress import load_exported  # lazy: `import slimtrain` stays free of torch

    return load_exported(path, factory=factory)

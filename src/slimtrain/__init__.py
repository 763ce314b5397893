"""slimtrain: compression-aware training for PyTorch.

Train a network once so that it can afterwards be pruned (unstructured or by whole filters) or factorized
to low rank at many levels with little accuracy lost, and export the result as a model that is really
smaller and faster.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

__version__ = "0.1.0"


def load(path: str | os.PathLike[str], *, factory: Callable[..., Any] | None = None) -> nn.Module:
    """Rebuild an exported model (``slimtrain export`` / :func:`slimtrain.compress.save_exported`).

    The architecture is rebuilt from the manifest (base model from the registry, or ``factory``, with the
    recorded keyword arguments, then the recorded layer replacements); no class is unpickled. The weights
    file's checksum and every tensor's name, shape and dtype are checked before the weights are loaded.

    Args:
        path: The exported-model directory.
        factory: The base model factory, for models saved from a factory rather than a registry name.

    Returns:
        The ``torch.nn.Module`` in eval mode.

    Raises:
        slimtrain.compress.ExportFormatError: A missing, corrupted or inconsistent file, naming it.
    """
    from slimtrain.compress import load_exported  # lazy: `import slimtrain` stays free of torch

    return load_exported(path, factory=factory)

"""Models inside a wrapper: ``DistributedDataParallel`` / ``DataParallel`` and ``torch.compile``.

A wrapper holds the user's model as a child (``model.module``, ``model._orig_mod``), so every parameter and
module name gains a prefix. One rule:

- Functions that only read a model accept a wrapper as any module (counts, metrics).
- Results that name layers or parameters of the model (channel plans and groups, masks, gates; saving,
  ONNX export, export) are named by :func:`unwrap_model`'s model, and functions that later take a model
  together with such names resolve them on the unwrapped model too, so names computed on a wrapper apply to
  the model inside it and back. Tracing (DepGraph's hooks) runs on the unwrapped model, which
  ``torch.compile``'s dynamo never sees.
- Functions that copy or replace layers refuse a data-parallel wrapper, saying to pass ``model.module``
  (with the same names): a copy would carry its process group, and a layer replaced under it would no
  longer be the one it synchronises. A ``torch.compile`` wrapper is copied whole.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from slimtrain.errors import UnsupportedModelError


def _inner(model: nn.Module) -> tuple[nn.Module, str] | None:
    """The wrapped model and the attribute holding it, or None for a model that wraps nothing."""
    if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        return model.module, "module"
    orig = getattr(model, "_orig_mod", None)  # torch.compile's OptimizedModule
    if isinstance(orig, nn.Module) and type(model).__name__ == "OptimizedModule":
        return orig, "_orig_mod"
    return None


def unwrap_model(model: nn.Module) -> nn.Module:
    """The user's model inside any nesting of data-parallel and ``torch.compile`` wrappers."""
    while (inner := _inner(model)) is not None:
        model = inner[0]
    return model


def refuse_data_parallel(model: nn.Module, what: str) -> None:
    """Raise if ``model`` is (or wraps) a ``DistributedDataParallel`` / ``DataParallel`` module.

    Args:
        model: The model given to ``what``.
        what: The operation, for the message (``"svd_decompose"``).

    Raises:
        UnsupportedModelError: Naming the wrapper and what to pass instead.
    """
    path = "model"
    while (inner := _inner(model)) is not None:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            raise UnsupportedModelError(
                f"{what} was given a {type(model).__name__} ({path}); it copies or replaces layers, which "
                f"a data-parallel wrapper cannot follow: pass {path}.module (every rank holds the same "
                "weights), and wrap the result again"
            )
        model, attribute = inner
        path = f"{path}.{attribute}"


def copy_model(model: nn.Module, what: str = "this operation") -> nn.Module:
    """Return a deep copy of ``model`` (compression operators never mutate their input).

    A data-parallel wrapper is refused (its copy would carry the process group): pass ``model.module``.

    Computed tensor attributes (e.g. the ``weight`` that ``torch.nn.utils.prune`` derives from ``weight_orig``
    and ``weight_mask``) are not graph leaves and cannot be deep-copied; they are copied detached, which
    is harmless because their owners recompute them on every forward pass.
    """
    refuse_data_parallel(model, what)
    memo: dict[int, object] = {}
    for module in model.modules():
        for value in vars(module).values():
            # An RNN holds its (possibly computed) weights in a list, ``_flat_weights``.
            for item in value if isinstance(value, (list, tuple)) else (value,):
                if isinstance(item, torch.Tensor) and not item.is_leaf:
                    memo[id(item)] = item.detach().clone()
    return copy.deepcopy(model, memo)

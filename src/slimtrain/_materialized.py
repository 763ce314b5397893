"""Checks, at the call, that a model's parameters hold what the public functions need.

- :func:`refuse_unmaterialized`: every parameter and buffer holds values (none is on the ``meta`` device or
  an uninitialized parameter of a lazy module), so counts, copies and factorizations see real weights.
- :func:`refuse_sparse_gradients`: no trained parameter gets sparse gradients (``nn.Embedding(sparse=True)``),
  which the optimizers and regularizers that update gradients in place cannot take.
"""

from __future__ import annotations

from torch import nn
from torch.nn.parameter import is_lazy

from slimtrain.errors import UnsupportedModelError


def _owner(model: nn.Module, name: str) -> tuple[str, nn.Module]:
    """The path and module owning the parameter or buffer ``name`` of ``model``."""
    path = name.rpartition(".")[0]
    return path, model.get_submodule(path)


def refuse_unmaterialized(model: nn.Module, what: str) -> None:
    """Raise if a parameter or buffer of ``model`` has no values yet (``meta`` device, lazy module).

    Args:
        model: The model given to a public function.
        what: The function, for the message (``"count_parameters"``).

    Raises:
        UnsupportedModelError: Naming the first such tensor, its module path and type, and what to do.
    """
    tensors = [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]
    for name, tensor in tensors:
        if is_lazy(tensor):
            why = (
                "is an uninitialized parameter of a lazy module; run one forward pass on a real input first, "
                "which gives it its shape and values"
            )
        elif tensor.is_meta:
            why = (
                "is on the 'meta' device and holds no values; materialize the model first "
                "(model.to_empty(device='cpu') then load or initialize its weights)"
            )
        else:
            continue
        path, module = _owner(model, name)
        raise UnsupportedModelError(
            f"{what}: {name!r} of module {path or '<root>'!r} ({type(module).__qualname__}) {why}"
        )


def refuse_sparse_gradients(
    model: nn.Module, what: str, names: set[str] | None = None, alternative: str = ""
) -> None:
    """Raise if a trained parameter of ``model`` gets sparse gradients (an embedding with ``sparse=True``).

    Args:
        model: The model.
        what: The operation that needs dense gradients, for the message (``"SFW"``).
        names: The parameter names the operation updates; default every parameter that requires grad.
        alternative: A further way out, appended to the message (``"or use ... instead"``).

    Raises:
        UnsupportedModelError: Naming the first such module, its path and type, and what to do.
    """
    for path, module in model.named_modules():
        if not isinstance(module, (nn.Embedding, nn.EmbeddingBag)) or not module.sparse:
            continue
        weight = f"{path}.weight" if path else "weight"
        if module.weight.requires_grad and (names is None or weight in names):
            raise UnsupportedModelError(
                f"{what} updates gradients as dense tensors, but module {path or '<root>'!r} "
                f"({type(module).__qualname__}) has sparse=True and gives its weight sparse gradients; build "
                "it with sparse=False, or freeze it (module.weight.requires_grad_(False)) to leave it out"
                + (f", {alternative}" if alternative else "")
            )

"""Shared (tied) parameters, found once by identity (docs/metrics.md#shared-parameters).

A parameter object reachable under several qualified names (an embedding tied to an output head, two layers
sharing a weight, a module registered twice) is *one* tensor: it is counted once, pruned once (its mask holds
for every alias), stored once and must stay shared through every model transformation. Its *first name* is
the one ``model.named_parameters()`` (which drops duplicates) gives it.
"""

from __future__ import annotations

from torch import nn

from slimtrain.errors import UnsupportedModelError


def parameter_aliases(model: nn.Module) -> dict[int, tuple[str, ...]]:
    """Every qualified name of each parameter of ``model``, keyed by ``id(parameter)``.

    Names are in ``named_parameters`` order; the first is the parameter's first name.
    """
    names: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(p), []).append(name)
    return {key: tuple(group) for key, group in names.items()}


def shared_parameter_groups(model: nn.Module) -> list[tuple[str, ...]]:
    """The name groups of the parameters of ``model`` that have two or more names, first name first."""
    return [names for names in parameter_aliases(model).values() if len(names) > 1]


def first_names(model: nn.Module) -> dict[str, str]:
    """Map every parameter name of ``model``, aliases included, to its parameter's first name."""
    return {name: names[0] for names in parameter_aliases(model).values() for name in names}


def refuse_shared(model: nn.Module, module_names: list[str], what: str) -> None:
    """Raise if a parameter of one of ``module_names`` is shared with a module outside that module.

    A transformation that replaces a module by a new one (a factorization) would silently untie its shared
    parameters; it calls this first.

    Args:
        model: The model.
        module_names: Qualified names of the modules about to be replaced.
        what: The transformation, for the message (``"SVD factorization"``).

    Raises:
        UnsupportedModelError: Naming both module paths and the tensor.
    """
    aliases = parameter_aliases(model)
    for module_name in module_names:
        module = model.get_submodule(module_name)
        prefix = f"{module_name}." if module_name else ""
        for local, p in module.named_parameters(remove_duplicate=False):
            own = prefix + local
            others = [n for n in aliases.get(id(p), ()) if n != own and not n.startswith(prefix)]
            if others:
                other_module = others[0].rpartition(".")[0] or "<root>"
                raise UnsupportedModelError(
                    f"{what} of {module_name!r} ({type(module).__name__}) would untie its parameter {own!r}, "
                    f"which is shared with module {other_module!r} ({others[0]!r}); leave {module_name!r} "
                    "out of the transformation or untie the parameters first"
                )


def refuse_untied(before: list[tuple[str, ...]], after: nn.Module, what: str) -> None:
    """Raise if a group of shared parameter names of the original model is no longer one tensor in ``after``.

    Args:
        before: :func:`shared_parameter_groups` of the model ``after`` was derived from.
        after: The transformed model.
        what: The transformation, for the message (``"channel removal"``).

    Raises:
        UnsupportedModelError: Naming the shared parameter's names.
    """
    params = dict(after.named_parameters(remove_duplicate=False))
    for names in before:
        if len({id(params.get(name)) for name in names}) != 1 or names[0] not in params:
            raise UnsupportedModelError(
                f"{what} would untie the shared parameter {' = '.join(names)}; leave the modules that share "
                "it (" + ", ".join(repr(n.rpartition(".")[0] or "<root>") for n in names) + ") out of it or "
                "untie the parameters first"
            )

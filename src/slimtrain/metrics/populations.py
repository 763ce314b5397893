"""Parameter populations: which tensors a metric is computed over (docs/metrics.md#populations).

- ``all``: every parameter of the model (weights, biases, normalisation affine parameters, embeddings);
  buffers such as BN running statistics are not parameters.
- ``prunable``: the prunable weights of :mod:`slimtrain.layers.prunable`'s registry — convolutions (transposed
  included), linears, RNN weights of every layer and direction, attention input projections, Hugging Face
  ``Conv1D`` — and the factors of factorized layers that replace them; no biases, no normalisation
  parameters, no embeddings (unless tied to a prunable weight). A parametrized weight counts as its
  effective value.
- ``compressed``: the weights (or factors) of the layers a method actually targets, chosen by module name or
  by a predicate.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from torch import nn

from slimtrain.errors import UnknownNameError
from slimtrain.layers.replacement import some_names

Role = Literal["weight", "factors", "bias", "other"]
"""What a counted tensor is: a prunable weight, the factors of a factorized layer, a bias, or other."""

ModulePredicate = Callable[[str, nn.Module], bool]


@dataclass(frozen=True)
class Population:
    """A named selection of counted tensors.

    Attributes:
        name: ``"all"``, ``"prunable"`` or ``"compressed"``.
        modules: For ``compressed``: the module names selected (a module's descendants are included).
        predicate: For ``compressed``: a ``(module_name, module) -> bool`` test; a tensor is selected when
            the test holds for its owning module or one of that module's ancestors.
    """

    name: Literal["all", "prunable", "compressed"]
    modules: tuple[str, ...] = ()
    predicate: ModulePredicate | None = None

    def describe(self) -> str:
        """Return a short human-readable description (``"compressed: fc1, fc2"``)."""
        if self.name != "compressed":
            return self.name
        if self.predicate is not None:
            return f"compressed: {getattr(self.predicate, '__name__', 'predicate')}"
        return "compressed: " + ", ".join(self.modules)

    def validate(self, model: nn.Module) -> None:
        """Raise :class:`~slimtrain.errors.UnknownNameError` naming every listed module ``model`` lacks.

        The message also lists some of the model's module names (a ``BadInputError`` and ``KeyError``).
        """
        names = [n for n, _ in model.named_modules() if n]
        missing = [m for m in self.modules if m not in names and m != ""]
        if missing:
            raise UnknownNameError(
                f"population {self.describe()!r}: {type(model).__qualname__} has no module named "
                f"{', '.join(map(repr, missing))}; {some_names(names)}"
            )

    def includes(self, role: Role, module_name: str, model: nn.Module) -> bool:
        """Whether a tensor of the given role, owned by ``module_name`` in ``model``, belongs here."""
        if self.name == "all":
            return True
        if role not in ("weight", "factors"):
            return False
        if self.name == "prunable":
            return True
        ancestors = _self_and_ancestors(module_name)
        if self.predicate is not None:
            return any(self.predicate(a, model.get_submodule(a)) for a in ancestors)
        return any(a in self.modules for a in ancestors)


ALL = Population("all")
PRUNABLE = Population("prunable")


def compressed(modules: Iterable[str] | ModulePredicate) -> Population:
    """Build the ``compressed`` population from module names or a ``(name, module) -> bool`` predicate.

    Args:
        modules: Names of the targeted modules (e.g. ``["fc1", "fc2"]``; a container name selects the
            layers inside it), or a predicate such as ``lambda name, m: isinstance(m, TTLinear)``.

    Returns:
        The population of the weights/factors of the selected layers.
    """
    if callable(modules):
        return Population("compressed", predicate=modules)
    names = tuple(modules)
    if not names:
        raise ValueError("compressed population needs at least one module name")
    return Population("compressed", modules=names)


def resolve_population(population: str | Population) -> Population:
    """Turn ``"all"``/``"prunable"`` or a :class:`Population` into a :class:`Population`."""
    if isinstance(population, Population):
        return population
    if population == "all":
        return ALL
    if population == "prunable":
        return PRUNABLE
    raise ValueError(
        f"unknown population {population!r}: use 'all', 'prunable' or slimtrain.metrics.compressed([...])"
    )


def _self_and_ancestors(module_name: str) -> list[str]:
    """``"a.b.c"`` -> ``["a.b.c", "a.b", "a", ""]`` (``""`` is the root module)."""
    parts = module_name.split(".") if module_name else []
    return [".".join(parts[:i]) for i in range(len(parts), -1, -1)]

"""Dense, stored and non-zero parameter counts per tensor, per layer and per population (docs/metrics.md).

Counts are taken on the *effective* tensors: pruning masks applied through ``torch.nn.utils.prune``
(``weight_orig`` · ``weight_mask``) or ``torch.nn.utils.parametrize`` are honoured, so a masked model's
zeros are counted as zeros. A :class:`~slimtrain.metrics.FactorizedLayer` is counted as one unit: its
factors are *stored*, the dense layer it replaces is its *dense* size. A
:class:`~slimtrain.metrics.SparseWeightLayer` (CSR storage) counts its stored values as its ``weight``, of the
dense weight's size.

Sparsity counts zeros only (docs/metrics.md): the zero entries of the tensors a model computes with, over
their entries — a plain or CSR weight's dense size, a factorized layer's stored factors. Storing fewer
entries than the dense layer (factors) is the storage fraction, stored/dense, never a sparsity.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from slimtrain._materialized import refuse_unmaterialized
from slimtrain.layers.prunable import prunable_weight_names
from slimtrain.metrics.factorized import FactorizedLayer
from slimtrain.metrics.populations import Population, Role, resolve_population
from slimtrain.metrics.sparse_weight import SparseWeightLayer

DENSE_LAYER_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.modules.conv._ConvNd)
"""Layers whose MACs follow docs/metrics.md's Conv/Linear formulas (the ``prunable`` population is wider:
:mod:`slimtrain.layers.prunable`)."""


@dataclass(frozen=True)
class TensorCount:
    """Counts of one stored tensor (or of all factors of one factorized layer).

    Attributes:
        name: Qualified name (``"features.0.weight"``; ``"<layer>.factors"`` for a factorized layer).
        module: Qualified name of the owning module (``""`` for the root).
        module_type: Class name of the owning module.
        role: ``"weight"``, ``"factors"``, ``"bias"`` or ``"other"``.
        shapes: Shape of each stored tensor (several for factors).
        dense: Size of the dense tensor this stands for (the replaced layer's weight for factors).
        stored: Number of entries actually stored.
        nonzero: Number of non-zero stored entries, masks applied.
        computed: True for the effective value of a weight computed from several (or differently shaped)
            parametrization originals (``weight_norm``'s g and v): it stands for them in the ``prunable``
            and ``compressed`` populations, while ``all`` counts the originals, which are stored.
    """

    name: str
    module: str
    module_type: str
    role: Role
    shapes: tuple[tuple[int, ...], ...]
    dense: int
    stored: int
    nonzero: int
    computed: bool = False

    @property
    def entries(self) -> int:
        """Entries whose zeros the sparsity counts: the stored factors, else the dense tensor's size.

        A CSR weight's missing entries are zeros of the weight it stands for; a factorized layer's dense
        weight is never formed, so only its factors can be sparse.
        """
        return self.stored if self.role == "factors" else self.dense

    @property
    def sparsity(self) -> float:
        """Fraction of zero entries, ``1 − nonzero/entries`` (0 for an empty tensor).

        For factors this is the fraction of zeros among the stored factors, not ``1 − stored/dense`` (that is
        ``1 −`` the storage fraction).
        """
        return 1.0 - self.nonzero / self.entries if self.entries else 0.0


@dataclass(frozen=True)
class ParameterTotals:
    """Totals over one population: N (dense), stored count and NNZ (docs/metrics.md#populations).

    Attributes:
        population: Description of the population.
        dense: N(P), the dense size (dense-equivalent size for factorized layers).
        stored: Entries actually stored.
        nonzero: NNZ(P), non-zero stored entries after masks.
        entries: Entries whose zeros :attr:`sparsity` counts (:attr:`TensorCount.entries` summed): N(P)
            without factorized layers; their stored factors instead of their dense size with them.
            ``None`` means ``dense``.
    """

    population: str
    dense: int
    stored: int
    nonzero: int
    entries: int | None = None

    @property
    def sparsity(self) -> float:
        """Fraction of zeros, 1 − NNZ(P)/entries(P) (docs/metrics.md); 0 for an empty population.

        Equal to 1 − NNZ(P)/N(P) for models without factorized layers (masked, CSR or thinned); a factorized
        layer contributes the zeros of its factors, not the entries it does not store.
        """
        entries = self.dense if self.entries is None else self.entries
        return 1.0 - self.nonzero / entries if entries else 0.0

    @property
    def density(self) -> float:
        """Density, the fraction of non-zero entries: 1 − sparsity(P)."""
        return 1.0 - self.sparsity


def count_tensors(model: nn.Module, population: str | Population = "all") -> list[TensorCount]:
    """Count every parameter tensor of ``model`` that belongs to ``population``, in module order.

    A ``weight`` is a prunable weight of :mod:`slimtrain.layers.prunable`'s registry (convolutions, linears,
    RNN and attention input weights, Hugging Face ``Conv1D``). Shared (tied) parameters are counted once,
    under their first name (``named_parameters`` order), as a ``weight`` when any alias is a prunable weight
    (docs/metrics.md#shared-parameters). A parametrized weight computed from several originals
    (``weight_norm``) is counted by its originals in ``all`` and by its effective value
    (:attr:`TensorCount.computed`) in ``prunable``. Factorized layers give one ``factors`` entry (all their
    parameters except their own ``bias``) plus a ``bias`` entry if they have one.

    Args:
        model: The model (masked or exported).
        population: ``"all"``, ``"prunable"`` or a :func:`~slimtrain.metrics.compressed` population.

    Returns:
        One :class:`TensorCount` per counted tensor.

    Raises:
        ValueError: If a factorized layer reports a dense size smaller than its bias.
        UnknownNameError: The population names modules the model lacks (a ``BadInputError``).
        UnsupportedModelError: A parameter or buffer without values (``meta`` device, lazy module).
    """
    refuse_unmaterialized(model, "parameter counting")
    pop = resolve_population(population)
    pop.validate(model)
    seen: set[int] = set()
    dense_weights = _prunable_ids(model)
    out: list[TensorCount] = []
    skip: list[str] = []
    with torch.no_grad():
        for mname, module in model.named_modules():
            if any(mname == s or mname.startswith(s + ".") for s in skip):
                continue
            if isinstance(module, parametrize.ParametrizationList):
                skip.append(mname)  # its `original` is counted through the parametrized owner
                continue
            if isinstance(module, FactorizedLayer) and isinstance(module, nn.Module):
                skip.append(mname)
                entries = _factorized_entries(mname, module, seen)
            else:
                entries = _plain_entries(mname, module, seen, dense_weights)
            # A computed weight stands for its originals, which `all` counts instead.
            out.extend(
                e
                for e in entries
                if pop.includes(e.role, e.module, model) and not (e.computed and pop.name == "all")
            )
    return out


def count_parameters(model: nn.Module, population: str | Population = "all") -> ParameterTotals:
    """Total dense, stored and non-zero counts of ``model`` over ``population`` (docs/metrics.md#populations).

    Example:
        >>> import torch.nn as nn
        >>> t = count_parameters(nn.Linear(3, 2), "prunable")
        >>> (t.dense, t.stored, t.nonzero)
        (6, 6, 6)
    """
    pop = resolve_population(population)
    entries = count_tensors(model, pop)
    return ParameterTotals(
        population=pop.describe(),
        dense=sum(e.dense for e in entries),
        stored=sum(e.stored for e in entries),
        nonzero=sum(e.nonzero for e in entries),
        entries=sum(e.entries for e in entries),
    )


def sparsity(model: nn.Module, population: str | Population = "all") -> float:
    """Return the sparsity (fraction of zeros, :attr:`ParameterTotals.sparsity`) of ``model`` over P."""
    return count_parameters(model, population).sparsity


def density(model: nn.Module, population: str | Population = "all") -> float:
    """Return the density (fraction of non-zeros) 1 − sparsity of ``model`` over population P."""
    return count_parameters(model, population).density


def sparsity_per_layer(model: nn.Module, population: str | Population = "prunable") -> dict[str, float]:
    """Sparsity (fraction of zeros) of each counted tensor of ``population``, keyed by tensor name."""
    return {e.name: e.sparsity for e in count_tensors(model, population)}


def effective_tensors(module: nn.Module) -> Iterator[tuple[str, Tensor, Tensor]]:
    """Yield ``(name, effective tensor, underlying parameter)`` for ``module``'s own stored parameters.

    The effective tensor has pruning masks applied: ``torch.nn.utils.prune`` keeps ``<name>_orig`` as the
    parameter and ``<name>_mask`` as a buffer; a ``parametrize`` parametrization with one original of the
    tensor's shape (a mask) gives the tensor it computes. A parametrization with several originals, or one of
    another shape (``weight_norm``), gives its originals, as ``parametrizations.<name>.<original>``.
    """
    for pname, p in module.named_parameters(recurse=False):
        base = pname.removesuffix("_orig")
        if base != pname and hasattr(module, base + "_mask") and isinstance(getattr(module, base), Tensor):
            yield base, getattr(module, base), p
        else:
            yield pname, p, p
    if parametrize.is_parametrized(module):
        for pname, plist in module.parametrizations.items():
            originals = dict(plist.named_parameters(recurse=False))
            effective = getattr(module, pname)
            if _stands_for_original(effective, originals):
                yield pname, effective, next(iter(originals.values()))
            else:
                for oname, original in originals.items():
                    yield f"parametrizations.{pname}.{oname}", original, original


def _stands_for_original(effective: Tensor, originals: dict[str, Tensor]) -> bool:
    """Whether a parametrized tensor is counted in place of its single original (a mask), not beside it."""
    return len(originals) == 1 and next(iter(originals.values())).shape == effective.shape


def effective_weight(module: nn.Module) -> Tensor:
    """The weight a Conv/Linear layer computes with: masks applied; a sparse-storage layer's dense weight."""
    if isinstance(module, SparseWeightLayer):
        return module.dense_weight()
    return module.weight  # a prune hook or a parametrization computes it with masks applied


def _role(module: nn.Module, pname: str) -> Role:
    """Role of the parameter ``pname`` of a non-factorized ``module``."""
    if pname == "bias" or pname.startswith(("bias_", "in_proj_bias")):  # RNN bias_ih_l0, attention in_proj
        return "bias"
    if pname in prunable_weight_names(module):
        return "weight"
    return "other"


def _prunable_ids(model: nn.Module) -> set[int]:
    """``id`` of the parameter behind every prunable weight: a tied tensor is prunable by any alias."""
    return {
        id(p) for m in model.modules() for n, _, p in effective_tensors(m) if n in prunable_weight_names(m)
    }


def _plain_entries(
    mname: str, module: nn.Module, seen: set[int], dense_weights: set[int]
) -> list[TensorCount]:
    """Counts of the own parameters of an ordinary module (``dense_weights``: :func:`_dense_weight_ids`)."""
    entries = []
    for pname, t, p in effective_tensors(module):
        if id(p) in seen:
            continue
        seen.add(id(p))
        n = t.numel()
        dense, role = n, ("weight" if id(p) in dense_weights else _role(module, pname))
        if isinstance(module, SparseWeightLayer) and pname == "values":
            pname, role, dense = "weight", "weight", math.prod(module.dense_weight_shape())
        entries.append(
            TensorCount(
                name=_qualified(mname, pname),
                module=mname,
                module_type=type(module).__name__,
                role=role,
                shapes=(tuple(t.shape),),
                dense=dense,
                stored=n,
                nonzero=int(torch.count_nonzero(t)),
            )
        )
    for pname in prunable_weight_names(module):
        if parametrize.is_parametrized(module, pname):
            t = getattr(module, pname)
            if not _stands_for_original(
                t, dict(module.parametrizations[pname].named_parameters(recurse=False))
            ):
                n, nonzero = t.numel(), int(torch.count_nonzero(t))
                shape = (tuple(t.shape),)
                name, mtype = _qualified(mname, pname), type(module).__name__
                entries.append(TensorCount(name, mname, mtype, "weight", shape, n, n, nonzero, computed=True))
    return entries


def _factorized_entries(mname: str, module: nn.Module, seen: set[int]) -> list[TensorCount]:
    """Counts of a factorized layer: one ``factors`` entry and its ``bias`` entry, if any."""
    bias = getattr(module, "bias", None)
    bias = bias if isinstance(bias, Tensor) else None
    n_bias = bias.numel() if bias is not None else 0
    dense_weight = int(module.dense_parameter_count()) - n_bias
    if dense_weight < 0:
        raise ValueError(
            f"factorized layer {mname!r} ({type(module).__name__}): dense_parameter_count() is smaller "
            f"than its bias ({n_bias})"
        )
    shapes, stored, nonzero = [], 0, 0
    for sub in module.modules():
        for _, t, p in effective_tensors(sub):
            if id(p) in seen or (bias is not None and p is bias):
                continue
            seen.add(id(p))
            shapes.append(tuple(t.shape))
            stored += t.numel()
            nonzero += int(torch.count_nonzero(t))
    tname = type(module).__name__
    entries = [
        TensorCount(
            _qualified(mname, "factors"),
            mname,
            tname,
            "factors",
            tuple(shapes),
            dense_weight,
            stored,
            nonzero,
        )
    ]
    if bias is not None and id(bias) not in seen:
        seen.add(id(bias))
        nb = int(torch.count_nonzero(bias))
        entries.append(
            TensorCount(
                _qualified(mname, "bias"), mname, tname, "bias", (tuple(bias.shape),), n_bias, n_bias, nb
            )
        )
    return entries


def _qualified(module_name: str, local: str) -> str:
    """``"fc1", "weight"`` -> ``"fc1.weight"``; the root module has no prefix."""
    return f"{module_name}.{local}" if module_name else local


def factorized_modules(model: nn.Module) -> dict[str, nn.Module]:
    """The outermost :class:`~slimtrain.metrics.FactorizedLayer` modules of ``model``, by name."""
    found: dict[str, nn.Module] = {}
    for name, m in model.named_modules():
        if isinstance(m, FactorizedLayer) and not any(name.startswith(f + ".") for f in found):
            found[name] = m
    return found

"""One dictionary of the docs/metrics.md#summarize fields that apply to a model."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

from torch import nn

from slimtrain._materialized import refuse_unmaterialized
from slimtrain.metrics.counting import (
    ParameterTotals,
    count_parameters,
    count_tensors,
    factorized_modules,
    sparsity_per_layer,
)
from slimtrain.metrics.dlrt_conventions import (
    cr_percent_eval_dlrt_convention,
    cr_percent_eval_factorized_only,
)
from slimtrain.metrics.effective_sparsity import effective_sparsity, is_relu_mlp
from slimtrain.metrics.mac_formulas import theoretical_speedup
from slimtrain.metrics.macs import ExampleInput, count_macs
from slimtrain.metrics.populations import Population
from slimtrain.metrics.ratios import compression_ratio, storage_fraction

ModelState = Literal["masked", "exported"]


def summarize(
    model: nn.Module,
    example_input: ExampleInput,
    *,
    reference: nn.Module | None = None,
    population: Population | None = None,
    model_state: ModelState | None = None,
) -> dict[str, Any]:
    """Parameter, sparsity, ratio and MAC report fields for ``model`` (docs/metrics.md).

    N_ref (numerator of every compression ratio, reported as ``params_dense_all``) is the dense size of
    ``reference`` if given, else the model's own dense size (factorized layers count the dense layer they
    replace). N_stored is the non-zero count of a ``masked`` model and the stored count of an ``exported``
    one.

    Args:
        model: The compressed model.
        example_input: A real input at the evaluation resolution (first dimension = batch).
        reference: The dense model ``model`` came from; gives N_ref and ``macs_dense`` of exported models.
        population: A :func:`~slimtrain.metrics.compressed` population; adds ``storage_fraction_compressed``
            (NN-BCD's CR₂) and ``population``.
        model_state: ``"masked"`` (zeros kept in dense tensors) or ``"exported"`` (channels removed,
            factorized layers in place); default: ``exported`` if the model has factorized layers or a
            ``reference`` of another dense size and keeps no zeros in dense prunable weights
            (:func:`keeps_zeros`), else ``masked``.

    Sparsities count zeros only (a factorized layer contributes the zeros of its factors); what a model
    saves by storing fewer entries is ``storage_fraction_*`` = N_stored/N_ref = 1/``compression_ratio_*``.
    A ratio over an empty population (a model without parameters, or without prunable weights) is NaN
    (0/0); a compression ratio with nothing stored is ``inf``.

    Returns:
        ``model_state``, ``params_dense_all``, ``params_stored_all``, ``params_nonzero_all``,
        ``sparsity_all``, ``sparsity_prunable``, ``sparsity_per_layer``, ``compression_ratio_all``,
        ``compression_ratio_prunable``, ``storage_fraction_all``, ``storage_fraction_prunable``,
        ``macs_effective``; ``macs_dense`` and
        ``theoretical_speedup`` unless the model is factorized and no ``reference`` is given;
        ``sparsity_effective_prunable`` for plain ReLU MLPs; ``cr_percent_eval_dlrt_convention`` and
        ``cr_percent_eval_factorized_only`` for factorized models, with ``ranks_per_layer`` for those
        that expose a ``ranks`` attribute; ``storage_fraction_compressed`` and
        ``population`` with ``population``.

    Raises:
        UnsupportedModelError: A parameter or buffer without values (``meta`` device, lazy module).
    """
    refuse_unmaterialized(model, "summarize")
    if population is not None and population.name != "compressed":
        raise ValueError(f"population must be a compressed(...) population, got {population.describe()!r}")
    totals = {p: count_parameters(model, p) for p in ("all", "prunable")}
    refs = (
        {p: count_parameters(reference, p) for p in ("all", "prunable")} if reference is not None else totals
    )
    factorized = factorized_modules(model)
    if model_state is None:
        reshaped = factorized or refs["all"].dense != totals["all"].dense
        model_state = "exported" if reshaped and not keeps_zeros(model) else "masked"
    elif model_state not in ("masked", "exported"):
        raise ValueError(f"model_state must be 'masked' or 'exported', got {model_state!r}")

    def n_stored(t: ParameterTotals) -> int:
        return t.nonzero if model_state == "masked" else t.stored

    out: dict[str, Any] = {
        "model_state": model_state,
        "params_dense_all": refs["all"].dense,  # N_ref: the thinned model's own size is params_stored_all
        "params_stored_all": totals["all"].stored,
        "params_nonzero_all": totals["all"].nonzero,
        **_zero_fields(model, totals),
        "compression_ratio_all": _ratio(compression_ratio, refs["all"].dense, n_stored(totals["all"])),
        "compression_ratio_prunable": _ratio(
            compression_ratio, refs["prunable"].dense, n_stored(totals["prunable"])
        ),
        "storage_fraction_all": _ratio(storage_fraction, n_stored(totals["all"]), refs["all"].dense),
        "storage_fraction_prunable": _ratio(
            storage_fraction, n_stored(totals["prunable"]), refs["prunable"].dense
        ),
    }
    if population is not None:
        comp = count_parameters(model, population)
        ref_comp = count_parameters(reference, population) if reference is not None else comp
        out["storage_fraction_compressed"] = _ratio(storage_fraction, n_stored(comp), ref_comp.dense)
        out["population"] = population.describe()
    out.update(_factorization_fields(model))
    macs = count_macs(model, example_input)
    out["macs_effective"] = macs.effective
    if reference is not None:
        out["macs_dense"] = count_macs(reference, example_input).executed
    elif not factorized:
        out["macs_dense"] = macs.executed
    if "macs_dense" in out:
        out["theoretical_speedup"] = theoretical_speedup(out["macs_dense"], macs.effective)
    return out


def _ratio(ratio: Callable[[int, int], float], numerator: int, denominator: int) -> float:
    """``ratio`` (:mod:`slimtrain.metrics.ratios`), or ``inf`` for x/0 and NaN for 0/0 (empty counts)."""
    if denominator == 0:
        return math.inf if numerator else math.nan
    return ratio(numerator, denominator)


def compressed_model_fields(model: nn.Module) -> dict[str, Any]:
    """The fields of :func:`summarize` that describe a compressed model as its method produced it.

    Its zeros — ``sparsity_all``, ``sparsity_prunable``, ``sparsity_per_layer`` and, for plain ReLU MLPs,
    ``sparsity_effective_prunable`` — and, for factorized models, ``ranks_per_layer`` and the DLRT eval
    compression rates ``cr_percent_eval_dlrt_convention`` / ``cr_percent_eval_factorized_only``. A sweep
    row and ``slimtrain export`` take these from the compressed model (a masked model's zeros, a
    rank-adaptive layer's trained ranks) and every storage, ratio and MAC field from its exported form.
    """
    totals = {p: count_parameters(model, p) for p in ("all", "prunable")}
    return {**_zero_fields(model, totals), **_factorization_fields(model)}


def keeps_zeros(model: nn.Module) -> bool:
    """Whether a plain prunable weight of ``model`` keeps zeros in its dense tensor (a masked model).

    :func:`summarize` then counts N_stored as the non-zeros, even if channels were removed or layers
    factorized as well.
    """
    return any(
        e.role == "weight" and e.stored == e.dense and e.nonzero < e.stored
        for e in count_tensors(model, "prunable")
    )


def _zero_fields(model: nn.Module, totals: dict[str, ParameterTotals]) -> dict[str, Any]:
    """``sparsity_all``, ``sparsity_prunable``, ``sparsity_per_layer`` (+ effective, for ReLU MLPs)."""
    out: dict[str, Any] = {
        "sparsity_all": totals["all"].sparsity,
        "sparsity_prunable": totals["prunable"].sparsity,
        "sparsity_per_layer": sparsity_per_layer(model, "prunable"),
    }
    if is_relu_mlp(model):
        out["sparsity_effective_prunable"] = effective_sparsity(model)
    return out


def _factorization_fields(model: nn.Module) -> dict[str, Any]:
    """``ranks_per_layer`` and the DLRT eval c.r. fields of a model with factorized layers, else ``{}``."""
    if not factorized_modules(model):
        return {}
    out: dict[str, Any] = {}
    if ranks := ranks_per_layer(model):
        out["ranks_per_layer"] = ranks
    out["cr_percent_eval_dlrt_convention"] = cr_percent_eval_dlrt_convention(model)
    out["cr_percent_eval_factorized_only"] = cr_percent_eval_factorized_only(model)
    return out


def ranks_per_layer(model: nn.Module) -> dict[str, list[int] | int]:
    """The ``ranks`` of every factorized layer of ``model`` that has them, by layer name (JSON-friendly)."""
    layers = factorized_modules(model).items()
    return {name: _as_list(layer.ranks) for name, layer in layers if hasattr(layer, "ranks")}


def _as_list(ranks: Any) -> list[int] | int:
    """A layer's ``ranks`` attribute as JSON-friendly ints (a sequence becomes a list)."""
    return [int(r) for r in ranks] if isinstance(ranks, (list, tuple)) else int(ranks)

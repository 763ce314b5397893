"""DLRT "compression rate" of a factorized model under the two published denominators (docs/metrics.md).

Both use the stored parameters of the inference model, biases excluded: a factorized layer counts the
factors it holds, or its ``eval_parameter_count()`` if it defines one (e.g. (n + m)·r for a layer that
holds U, S, V but is deployed as K = US and L = V):

- DLRT-Net convention (Schotthöfer et al., NeurIPS 2022): the denominator is the weights of **all** Linear and
  Conv layers (dense size of the factorized ones); the numerator adds every non-bias parameter of the
  non-factorized layers, BatchNorm γ included although γ is absent from the denominator (the reference
  code's accounting, kept by default so that published numbers are reproduced). The ratio is rounded to 3
  decimals before conversion to percent.
- RobustDLRT convention: factorized layers only, in numerator and denominator:
  c.r. = 1 − Σ(Σ_i n_i r_i + ∏ r_i)/Σ ∏ n_i; dense layers (first conv, last linear) are excluded.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from slimtrain.layers.counts import dlrt_train_parameter_count, tucker_train_parameter_count
from slimtrain.metrics.counting import TensorCount, count_tensors
from slimtrain.metrics.ratios import cr_percent


def cr_percent_eval_dlrt_convention(
    model: nn.Module, *, count_norm_weights: bool = True, decimals: int | None = 3
) -> float:
    """Eval c.r. in percent with DLRT-Net's denominator (all Conv/Linear weights).

    Args:
        model: The factorized inference model.
        count_norm_weights: Count the non-bias parameters of layers other than Conv/Linear (BatchNorm γ,
            embeddings) in the numerator, as DLRT-Net does (default, faithful); ``False`` leaves them out
            of both sides.
        decimals: Rounding of the ratio before conversion to percent (DLRT-Net: 3; ``None``: exact).

    Returns:
        ``100·(1 − N_lowrank/N_full)``.
    """
    entries = count_tensors(model, "all")
    numerator = sum(
        _eval_count(model, e)
        for e in entries
        if e.role in ("weight", "factors") or (count_norm_weights and e.role == "other")
    )
    denominator = sum(e.dense for e in entries if e.role in ("weight", "factors"))
    if denominator == 0:
        raise ValueError(f"{type(model).__name__} has no Conv/Linear weights: DLRT c.r. is undefined")
    return cr_percent(numerator, denominator, decimals)


def cr_percent_eval_factorized_only(model: nn.Module, *, decimals: int | None = None) -> float:
    """Eval c.r. in percent over factorized layers only (RobustDLRT convention).

    Raises:
        ValueError: If ``model`` has no factorized layer.
    """
    factors = [e for e in count_tensors(model, "all") if e.role == "factors"]
    if not factors:
        raise ValueError(f"{type(model).__name__} has no factorized layer: factorized-only c.r. is undefined")
    return cr_percent(sum(_eval_count(model, e) for e in factors), sum(e.dense for e in factors), decimals)


def _eval_count(model: nn.Module, entry: TensorCount) -> int:
    """Inference-model count of one entry: a factorized layer's ``eval_parameter_count()`` if defined."""
    if entry.role == "factors":
        layer_count = getattr(model.get_submodule(entry.module), "eval_parameter_count", None)
        if callable(layer_count):
            return int(layer_count())
    return entry.stored


def cr_percent_train_dlrt(
    layers: Sequence[tuple[int, int, int]],
    n_nonfactorized: int,
    n_full: int,
    *,
    with_grads: bool = False,
    decimals: int | None = 3,
) -> float:
    """Train c.r. in percent of a DLRT-Net model from its layer shapes (docs/metrics.md).

    Args:
        layers: ``(n, m, r)`` of every factorized matrix layer.
        n_nonfactorized: Parameters of the non-factorized layers counted in the numerator.
        n_full: Denominator (DLRT-Net convention: all Conv/Linear weights of the dense model).
        with_grads: DLRT-Net's "train with grads": K, L, Ŝ and the non-factorized weights counted twice,
            denominator doubled.
        decimals: Rounding of the ratio before conversion to percent (DLRT-Net: 3).

    Returns:
        ``100·(1 − (Σ [4(n+m)r + 8r²] + non-factorized)/N_full)`` (with the doubling above if requested).
    """
    factor = 2 if with_grads else 1
    numerator = sum(dlrt_train_parameter_count(n, m, r, with_grads) for n, m, r in layers)
    return cr_percent(numerator + factor * n_nonfactorized, factor * n_full, decimals)


def cr_percent_train_tucker(
    layers: Sequence[tuple[Sequence[int], Sequence[int], Sequence[int]]],
    n_nonfactorized: int,
    n_full: int,
    *,
    decimals: int | None = None,
) -> float:
    """Train c.r. in percent of a TDLRT Tucker model (this project's definition, docs/metrics.md).

    The count of a layer is :func:`~slimtrain.layers.counts.tucker_train_parameter_count`, the one its
    ``train_parameter_count_tucker(aug_cap)`` returns: pass ``layer.augmented_ranks(aug_cap)`` with the cap
    the training used (Zangrando et al., arXiv:2305.19059: ``r̂_i = min(2 r_i, r̄_i)``, ``r̄_i = r_max,i``
    for TDLRT's default ``aug_cap="rmax"``, ``n_i`` for ``"n"``).

    Args:
        layers: ``(dims, ranks, augmented_ranks)`` of every Tucker layer.
        n_nonfactorized: Parameters of the non-factorized layers counted in the numerator.
        n_full: Denominator (dense Conv/Linear weights).
        decimals: Rounding of the ratio before conversion to percent (``None``: exact).

    Returns:
        ``100·(1 − (Σ tucker_train_parameter_count + non-factorized)/N_full)``; gradients and optimizer
        state are not included (report them as separate counts).
    """
    numerator = sum(tucker_train_parameter_count(dims, ranks, wide) for dims, ranks, wide in layers)
    return cr_percent(numerator + n_nonfactorized, n_full, decimals)

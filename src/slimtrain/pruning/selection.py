"""Selection of the sparsity core: which entries to remove, from scores, with an exact count.

The default rule ``"exact"`` removes exactly k entries and never sorts: ``torch.kthvalue`` finds the k-th
smallest score in O(n), every score strictly below it is removed, and ties at the threshold are broken by
position, so the result is deterministic and identical on every distributed rank holding the same weights.
The tie rule ``"first"`` (default) removes the earliest tied entries (mapping order, then flat index);
``"last"`` removes the latest, i.e. keeps the earliest, as NN-BCD's stable descending sort does
(docs/nnbcd.md#hard-threshold-pruning). The count is ⌊s·n⌋ computed exactly (:func:`removal_count`), or a
given number (a budget).

Reference rules, kept as named options so that the faithful modes of the papers run on this core:

- ``"below_sorted"`` (SWD reference, docs/swd.md#corrected-defaults-and-faithful-flags): remove every score
  strictly below the value at index k of the sorted scores, so ties there are all kept and fewer than k can
  go;
- ``"below_quantile"`` (NN-BCD reference, docs/nnbcd.md#defaults-and-faithful-flags): remove every score
  strictly below ``torch.quantile(scores, s)`` (linear interpolation; the count can differ from ⌊s·n⌋ and
  ``torch.quantile`` limits the size).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from fractions import Fraction
from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "SelectionRule",
    "SelectionScope",
    "TieRule",
    "removal_count",
    "removal_masks",
    "smallest_k_mask",
    "sorted_threshold",
    "split_like",
]

SelectionRule = Literal["exact", "below_sorted", "below_quantile"]
SelectionScope = Literal["global", "layerwise"]
TieRule = Literal["first", "last"]


def _exact_fraction(value: float | Fraction) -> Fraction:
    # repr() gives the shortest decimal that round-trips, so 0.3 becomes 3/10 rather than 0.29999...
    return value if isinstance(value, Fraction) else Fraction(repr(float(value)))


def removal_count(n: int, sparsity: float | Fraction) -> int:
    """Number of entries to remove out of ``n`` for a sparsity fraction: ⌊sparsity·n⌋, computed exactly.

    Args:
        n: Population size.
        sparsity: Fraction removed, in [0, 1]. Floats are read as the decimal they print as (0.3 is 3/10).

    Returns:
        ⌊sparsity·n⌋ without floating-point rounding error.

    Raises:
        ValueError: If ``sparsity`` is outside [0, 1] or ``n`` is negative.
    """
    frac = _exact_fraction(sparsity)
    if not 0 <= frac <= 1:
        raise ValueError(f"sparsity must lie in [0, 1], got {sparsity}")
    if n < 0:
        raise ValueError(f"population size must be non-negative, got {n}")
    return math.floor(frac * n)


def smallest_k_mask(values: Tensor, k: int, ties: TieRule = "first") -> Tensor:
    """Boolean mask of exactly the ``k`` smallest entries of a 1-D tensor, ties broken by position.

    Args:
        values: 1-D tensor (typically scores); a NaN counts as +inf, so exactly ``k`` entries are selected
            whatever the values.
        k: How many entries to select, ``0 <= k <= values.numel()``.
        ties: Among equal values at the threshold, select the ``"first"`` (smallest index) or the ``"last"``.

    Returns:
        Boolean tensor shaped like ``values``, True on the selected entries. Every selected value is ≤ every
        unselected one (NaN ordered as +inf).

    Raises:
        ValueError: If ``values`` is not 1-D, ``k`` is out of range or ``ties`` unknown.
    """
    if values.dim() != 1:
        raise ValueError(f"values must be 1-D, got shape {tuple(values.shape)}")
    n = values.numel()
    if not 0 <= k <= n:
        raise ValueError(f"k must lie in [0, {n}], got {k}")
    if ties not in ("first", "last"):
        raise ValueError(f"ties must be 'first' or 'last', got {ties!r}")
    if k == 0:
        return torch.zeros_like(values, dtype=torch.bool)
    if k == n:
        return torch.ones_like(values, dtype=torch.bool)
    # kthvalue and the comparisons below would lose NaN entries from the count.
    values = torch.nan_to_num(values, nan=math.inf, posinf=math.inf, neginf=-math.inf)
    threshold = torch.kthvalue(values, k).values
    below = values < threshold
    at_threshold = values == threshold
    # The slots left after the values below the threshold go to the ties in position order; computed on the
    # device, so a training step that selects every batch never waits for the host.
    free = k - below.sum()
    if ties == "first":
        rank = torch.cumsum(at_threshold, dim=0)
    else:
        rank = torch.cumsum(at_threshold.flip(0), dim=0).flip(0)
    return below | (at_threshold & (rank <= free))


def sorted_threshold(values: Tensor, index: int) -> Tensor:
    """The value at ``index`` of the ascending sort of a 1-D tensor (without sorting: ``torch.kthvalue``).

    The threshold of the ``"below_sorted"`` reference rule: entries strictly below it are removed.

    Raises:
        ValueError: If ``values`` is not 1-D or ``index`` is out of range.
    """
    if values.dim() != 1 or not 0 <= index < values.numel():
        raise ValueError(f"index must lie in [0, {values.numel()}) of a 1-D tensor, got {index}")
    return torch.kthvalue(values, index + 1).values


def _rule_mask(values: Tensor, k: int, sparsity: float | Fraction | None, rule: str, ties: TieRule) -> Tensor:
    if rule == "exact":
        return smallest_k_mask(values, k, ties)
    if rule == "below_sorted":
        if k == values.numel():
            return torch.ones_like(values, dtype=torch.bool)
        return values < sorted_threshold(values, k)
    if rule == "below_quantile":
        if sparsity is None:
            raise ValueError("rule 'below_quantile' needs a sparsity, not a count")
        return values < torch.quantile(values, float(sparsity))
    raise ValueError(f"rule must be 'exact', 'below_sorted' or 'below_quantile', got {rule!r}")


def removal_masks(
    scores: Mapping[str, Tensor],
    sparsity: float | Fraction | None = None,
    *,
    count: int | None = None,
    scope: SelectionScope = "global",
    rule: SelectionRule = "exact",
    ties: TieRule = "first",
) -> dict[str, Tensor]:
    """Masks of the entries to remove: the smallest scores, globally or per tensor.

    Give either ``sparsity`` (⌊s·n⌋ removed, n the population, or each tensor's size per layer) or ``count``
    (a budget: that many removed over all tensors; ``scope="global"`` only).

    Args:
        scores: Named score tensors in a fixed order (ties are broken by that order, then by flat index).
        sparsity: Fraction removed, in [0, 1].
        count: Number removed in total.
        scope: ``"global"`` (one threshold over all tensors) or ``"layerwise"`` (each tensor separately).
        rule: ``"exact"`` (default), or the reference rules ``"below_sorted"`` (SWD) and ``"below_quantile"``
            (NN-BCD; needs ``sparsity``).
        ties: Tie rule of ``"exact"``: ``"first"`` (default) or ``"last"`` (NN-BCD's).

    Returns:
        ``{name: removed_mask}``, boolean masks shaped like the scores (True = removed).

    Raises:
        ValueError: If ``scores`` is empty, both or neither of ``sparsity``/``count`` are given, or an option
            is unknown or out of range.
    """
    if not scores:
        raise ValueError("removal_masks needs at least one score tensor")
    if (sparsity is None) == (count is None):
        raise ValueError("give exactly one of sparsity and count")
    if scope == "layerwise":
        if count is not None:
            raise ValueError("a count is a global budget; use sparsity with scope='layerwise'")
        return {
            name: _rule_mask(s.reshape(-1), removal_count(s.numel(), sparsity), sparsity, rule, ties).view(
                s.shape
            )
            for name, s in scores.items()
        }
    if scope != "global":
        raise ValueError(f"scope must be 'global' or 'layerwise', got {scope!r}")
    flat = torch.cat([s.reshape(-1) for s in scores.values()])
    k = removal_count(flat.numel(), sparsity) if count is None else count
    return split_like(_rule_mask(flat, k, sparsity, rule, ties), scores)


def split_like(flat: Tensor, tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Cut a 1-D tensor over the concatenation of ``tensors`` (mapping order) into views shaped like them.

    Raises:
        ValueError: If the sizes differ.
    """
    sizes = [t.numel() for t in tensors.values()]
    if flat.dim() != 1 or flat.numel() != sum(sizes):
        raise ValueError(f"a 1-D tensor of {sum(sizes)} entries is needed, got shape {tuple(flat.shape)}")
    return {
        name: part.view(t.shape) for (name, t), part in zip(tensors.items(), flat.split(sizes), strict=True)
    }

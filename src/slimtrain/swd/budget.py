"""Parameter-budget bisection of structured SWD (docs/swd.md)."""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Literal, Protocol

from torch import Tensor, nn

from slimtrain.errors import UnsupportedModelError
from slimtrain.swd.channels import GateCompare

__all__ = ["Bisection", "ChannelModel", "budget_threshold", "parameter_budget"]

Bisection = Literal["corrected", "reference"]


class ChannelModel(Protocol):
    """What the budget bisection needs of a channel model.

    :class:`~slimtrain.swd.GroupGates` (the default) and :class:`~slimtrain.swd.ChannelGraph` (reference).
    """

    def scores(self, model: nn.Module) -> Tensor:
        """The score of every gate channel (the threshold candidates)."""
        ...

    def parameter_count(self, model: nn.Module, threshold: float, compare: GateCompare = "ge") -> int:
        """Parameters left once the channels scoring below ``threshold`` are removed."""
        ...


def parameter_budget(model: nn.Module, target: float) -> int:
    """B = ⌊(1 − target/1000)·N_total⌋, computed exactly; ``target`` is per-mille of parameters removed.

    Raises:
        ValueError: If ``target`` is outside [0, 1000).
    """
    if not 0 <= target < 1000:
        raise ValueError(f"target is per-mille removed and must lie in [0, 1000), got {target}")
    total = sum(p.numel() for p in model.parameters())
    return math.floor((1 - Fraction(repr(float(target))) / 1000) * total)


def budget_threshold(
    graph: ChannelModel,
    model: nn.Module,
    target: float,
    bisection: Bisection = "corrected",
    gate_compare: GateCompare = "ge",
) -> float:
    """Global γ threshold whose surviving network meets the parameter budget of ``target``.

    Candidates are the sorted gate scores of ``graph`` (``graph.scores``: |γ| of every gate channel).
    ``"corrected"`` (default) returns the smallest candidate th with P(th) ≤ B, found by binary search (P is
    non-increasing in th); if even the largest candidate keeps too much, every gate channel is removed
    (th = +inf). ``"reference"`` reproduces the reference loop: bisect the candidate indices, return as soon
    as P(th) = B, otherwise shrink until hi − lo ≤ 1 and return the last th, which may miss the budget by one
    candidate.

    Args:
        graph: Channel model of ``model`` (its gates and parameter count).
        model: The model, with its current γ.
        target: Per-mille of parameters removed, in [0, 1000).
        bisection: ``"corrected"`` or ``"reference"``.
        gate_compare: Comparison of the count (``"ge"``, as the mask; ``"gt"`` is the reference's count).

    Returns:
        The threshold: channels with |γ| ≥ threshold are kept.

    Raises:
        UnsupportedModelError: If no threshold meets the budget (the ungated layers alone exceed it).
        ValueError: If an argument is unknown.
    """
    if bisection not in ("corrected", "reference"):
        raise ValueError(f"bisection must be 'corrected' or 'reference', got {bisection!r}")
    budget = parameter_budget(model, target)
    candidates = graph.scores(model).sort()[0]

    def count(index: int) -> int:
        return graph.parameter_count(model, float(candidates[index]), gate_compare)

    if bisection == "reference":
        lo, hi = 0, len(candidates)
        while True:
            mid = (lo + hi) // 2
            n = count(mid)
            if n == budget:
                return float(candidates[mid])
            if n < budget:
                hi = mid
            else:
                lo = mid
            if hi - lo <= 1:
                return float(candidates[mid])

    if count(len(candidates) - 1) > budget:
        refuse_unreachable(graph, model, target, gate_compare)
        return math.inf
    lo, hi = 0, len(candidates) - 1  # invariant: count(hi) <= budget
    while lo < hi:
        mid = (lo + hi) // 2
        if count(mid) <= budget:
            hi = mid
        else:
            lo = mid + 1
    return float(candidates[hi])


def refuse_unreachable(
    graph: ChannelModel, model: nn.Module, target: float, gate_compare: GateCompare = "ge"
) -> None:
    """Raise if no threshold meets the budget of ``target``: what no gate can remove exceeds it.

    The count with every gate at its least (``parameter_count`` at an infinite threshold) does not depend on
    γ, so methods check it when they set up, before training.

    Args:
        graph: The channel model (:class:`ChannelGraph` or :class:`~slimtrain.swd.GroupGates`).
        model: The model.
        target: Per-mille of the parameters removed.
        gate_compare: The count's comparison.

    Raises:
        UnsupportedModelError: Naming the model, the fraction and the budget.
    """
    budget = parameter_budget(model, target)
    if graph.parameter_count(model, math.inf, gate_compare) > budget:
        raise UnsupportedModelError(
            f"{type(model).__qualname__}: removing {target / 1000:g} of the parameters leaves at most "
            f"{budget}, but what no gate can remove already exceeds it (layers with no channel gated by "
            "a BatchNorm, and the one channel every gate keeps); choose a smaller target"
        )

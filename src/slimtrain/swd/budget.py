"""Parameter-budget bisection of structured SWD (docs/swd.md)."""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Literal, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from slimtrain.errors import UnsupportedModelError
from slimtrain.swd.channels import GateCompare

__all__ = [
    "Bisection",
    "ChannelModel",
    "CountsOnDevice",
    "budget_threshold",
    "budget_threshold_tensor",
    "parameter_budget",
]

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


@runtime_checkable
class CountsOnDevice(ChannelModel, Protocol):
    """A channel model that counts at many thresholds at once, on the device (:class:`GroupGates`)."""

    def parameter_counts(self, model: nn.Module, thresholds: Tensor, compare: GateCompare = "ge") -> Tensor:
        """``parameter_count`` at each of ``thresholds`` (1-D), as a tensor on the model's device."""
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
    non-increasing in th; a channel model that counts on the device, such as
    :class:`~slimtrain.swd.GroupGates`, is searched by :func:`budget_threshold_tensor` and read once); if
    even the largest candidate keeps too much, every gate channel is removed (th = +inf). ``"reference"``
    reproduces the reference loop: bisect the candidate indices, return as soon as P(th) = B, otherwise
    shrink until hi − lo ≤ 1 and return the last th, which may miss the budget by one candidate.

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
    if bisection == "corrected" and isinstance(graph, CountsOnDevice):
        threshold = float(budget_threshold_tensor(graph, model, target, gate_compare))
        if math.isinf(threshold):
            refuse_unreachable(graph, model, target, gate_compare)
        return threshold
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


PROBES_PER_ROUND = 8
"""Probes of :func:`budget_threshold_tensor` per round by default (it counts at these and the interval's
start; the fastest of 4, 8, 16 and 32 on ResNet-20 and ResNet-18 on a CPU)."""


def budget_threshold_tensor(
    graph: CountsOnDevice,
    model: nn.Module,
    target: float,
    gate_compare: GateCompare = "ge",
    probes: int = PROBES_PER_ROUND,
) -> Tensor:
    """The ``"corrected"`` threshold of :func:`budget_threshold`, found on the device without host reads.

    The same value: the smallest candidate th with P(th) ≤ B, or +inf when even the largest keeps too much.
    Unlike :func:`budget_threshold` it does not refuse a target that +inf does not meet either (that would
    read the host): check it once with :func:`refuse_unreachable`, which does not depend on γ, as
    :class:`~slimtrain.swd.ChannelSelection` does when it is built.

    Instead of one count per bisection step (each read on the host to choose the next half), every round
    counts at ``probes`` + 1 candidates spread over the interval still open and keeps the part
    between the last probe over the budget and the first within it, all as tensor operations; the number
    of rounds depends only on the number of candidates. A training step that re-derives the threshold thus
    never waits for the device (docs/training.md, "Host synchronisation").

    Args:
        graph: A channel model that counts on the device (:class:`~slimtrain.swd.GroupGates`).
        model: The model, with its current γ.
        target: Per-mille of parameters removed, in [0, 1000).
        gate_compare: Comparison of the count.
        probes: Candidates counted at once per round, besides the interval's start (≥ 1): more means fewer
            rounds of larger batches (at most one round: more than the candidates are not used).

    Returns:
        A 0-d tensor on the model's device, in the scores' dtype.
    """
    if probes < 1:
        raise ValueError(f"probes must be at least 1, got {probes}")
    budget = parameter_budget(model, target)
    candidates = graph.scores(model).sort()[0]
    n = len(candidates)
    probes = min(probes, max(n - 1, 1))  # more would count the same candidates again
    # The answer's index a = min{i : P(c_i) <= B} lies in [lo, hi]; P is non-increasing in i. Indices are
    # 1-element tensors: indexing with a 0-d tensor would read it on the host.
    lo = torch.zeros(1, dtype=torch.long, device=candidates.device)
    hi = torch.full((1,), n - 1, dtype=torch.long, device=candidates.device)
    steps = torch.arange(probes + 1, device=candidates.device)
    reachable = None
    span = n - 1  # an upper bound of hi - lo, known on the host: it fixes the number of rounds
    while True:
        at = lo + (hi - lo) * steps // probes  # at[0] = lo, at[-1] = hi
        within = graph.parameter_counts(model, candidates[at], gate_compare) <= budget
        if reachable is None:
            reachable = within[-1:]  # the largest candidate: nothing meets the budget if it does not
            within = within | ~reachable  # unreachable: any probe ends the search; the result is +inf
        first = torch.argmax(within.long()).reshape(1)  # the first probe within the budget
        hi = at[first]
        lo = torch.where(first > 0, at[(first - 1).clamp(min=0)] + 1, at[:1])
        span = max(0, -(-span // probes) - 1)  # what is left open between two probes
        if span == 0:
            break
    threshold = candidates[hi]
    return torch.where(reachable, threshold, torch.full_like(threshold, math.inf)).reshape(())


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

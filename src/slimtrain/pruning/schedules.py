"""Sparsity schedules of the gradual and iterative magnitude-pruning baselines."""

from __future__ import annotations

import math

__all__ = ["cubic_sparsity", "iterative_targets"]


def cubic_sparsity(
    step: int,
    final_sparsity: float,
    begin_step: int,
    end_step: int,
    initial_sparsity: float = 0.0,
    frequency: int = 1,
) -> float:
    """Sparsity of gradual magnitude pruning at a training step (Zhu & Gupta 2017, eq. 1).

    s_t = s_f + (s_i − s_f)·(1 − (t − t_0)/(n·Δt))³ for t_0 ≤ t ≤ t_0 + n·Δt, where the mask is updated
    every Δt = ``frequency`` steps (t is rounded down to the last update) and t_0 + n·Δt = ``end_step``.
    Before ``begin_step`` the sparsity is ``initial_sparsity``; after ``end_step`` it is ``final_sparsity``.
    ("To prune, or not to prune: exploring the efficacy of pruning for model compression", arXiv:1710.01878.)

    Args:
        step: Global training step.
        final_sparsity: s_f in [0, 1].
        begin_step: t_0, first pruning step.
        end_step: Last pruning step, > ``begin_step``.
        initial_sparsity: s_i in [0, 1].
        frequency: Δt, steps between mask updates.

    Returns:
        The sparsity to prune to at ``step``.

    Raises:
        ValueError: If the steps or sparsities are inconsistent.
    """
    if end_step <= begin_step:
        raise ValueError(f"end_step ({end_step}) must exceed begin_step ({begin_step})")
    if frequency < 1:
        raise ValueError(f"frequency must be >= 1, got {frequency}")
    for name, s in (("final_sparsity", final_sparsity), ("initial_sparsity", initial_sparsity)):
        if not 0.0 <= s <= 1.0:
            raise ValueError(f"{name} must lie in [0, 1], got {s}")
    if step < begin_step:
        return initial_sparsity
    if step >= end_step:
        return final_sparsity
    last_update = begin_step + ((step - begin_step) // frequency) * frequency
    progress = (last_update - begin_step) / (end_step - begin_step)
    return final_sparsity + (initial_sparsity - final_sparsity) * (1.0 - progress) ** 3


def iterative_targets(target: int, iterations: int) -> list[int]:
    """Cumulative per-mille targets of iterative pruning: t_i = ⌊(i+1)·target/k⌋ (docs/swd.md#baselines).

    Args:
        target: Final per-mille of removed weights (e.g. 900).
        iterations: Number k of prune/fine-tune iterations, ≥ 1.

    Returns:
        The k targets, non-decreasing, the last equal to ``target``.

    Raises:
        ValueError: If ``iterations`` < 1.
    """
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    return [math.floor((i + 1) * target / iterations) for i in range(iterations)]

"""Schedules of the sparsity core, as frozen dataclasses called with the global step.

A schedule is a pure function of the step (as jaxpruner's ``sparsity_schedules``), so a resumed run continues
where it stopped and every rank agrees. :class:`CubicSchedule` is gradual magnitude pruning's sparsity (Zhu &
Gupta), :class:`IterativeSchedule` Han's cumulative per-mille targets, :class:`ExponentialSchedule` the
growth of SWD's coefficient a (docs/swd.md#schedule-and-final-pruning).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["CubicSchedule", "ExponentialSchedule", "IterativeSchedule", "cubic_sparsity", "iterative_targets"]


@dataclass(frozen=True)
class CubicSchedule:
    """Sparsity of gradual magnitude pruning at a training step (Zhu & Gupta 2017, eq. 1).

    s_t = s_f + (s_i − s_f)·(1 − (t − t_0)/(n·Δt))³ for t_0 ≤ t ≤ t_0 + n·Δt, where the mask is updated
    every Δt = ``frequency`` steps (t is rounded down to the last update) and t_0 + n·Δt = ``end_step``.
    Before ``begin_step`` the sparsity is ``initial_sparsity``; after ``end_step`` it is ``final_sparsity``.
    ("To prune, or not to prune: exploring the efficacy of pruning for model compression", arXiv:1710.01878.)

    Args:
        final_sparsity: s_f in [0, 1].
        begin_step: t_0, first pruning step.
        end_step: Last pruning step, > ``begin_step``.
        initial_sparsity: s_i in [0, 1].
        frequency: Δt, steps between mask updates.

    Raises:
        ValueError: If the steps or sparsities are inconsistent.
    """

    final_sparsity: float
    begin_step: int
    end_step: int
    initial_sparsity: float = 0.0
    frequency: int = 1

    def __post_init__(self) -> None:
        if self.end_step <= self.begin_step:
            raise ValueError(f"end_step ({self.end_step}) must exceed begin_step ({self.begin_step})")
        if self.frequency < 1:
            raise ValueError(f"frequency must be >= 1, got {self.frequency}")
        for name in ("final_sparsity", "initial_sparsity"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")

    def __call__(self, step: int) -> float:
        """The sparsity to prune to at global step ``step``."""
        if step < self.begin_step:
            return self.initial_sparsity
        if step >= self.end_step:
            return self.final_sparsity
        last_update = self.begin_step + ((step - self.begin_step) // self.frequency) * self.frequency
        progress = (last_update - self.begin_step) / (self.end_step - self.begin_step)
        return self.final_sparsity + (self.initial_sparsity - self.final_sparsity) * (1.0 - progress) ** 3


def cubic_sparsity(
    step: int,
    final_sparsity: float,
    begin_step: int,
    end_step: int,
    initial_sparsity: float = 0.0,
    frequency: int = 1,
) -> float:
    """``CubicSchedule(final_sparsity, begin_step, end_step, initial_sparsity, frequency)(step)``.

    Args:
        step: Global training step.
        final_sparsity: s_f in [0, 1].
        begin_step: t_0, first pruning step.
        end_step: Last pruning step, > ``begin_step``.
        initial_sparsity: s_i in [0, 1].
        frequency: Δt, steps between mask updates.

    Returns:
        The sparsity to prune to at ``step`` (:class:`CubicSchedule`).

    Raises:
        ValueError: If the steps or sparsities are inconsistent.
    """
    return CubicSchedule(final_sparsity, begin_step, end_step, initial_sparsity, frequency)(step)


@dataclass(frozen=True)
class IterativeSchedule:
    """Cumulative per-mille targets of iterative pruning: t_i = ⌊(i+1)·target/k⌋ (docs/swd.md#baselines).

    Args:
        target: Final per-mille of removed weights (e.g. 900).
        iterations: Number k of prune/fine-tune iterations, ≥ 1.

    Raises:
        ValueError: If ``iterations`` < 1.
    """

    target: int
    iterations: int

    def __post_init__(self) -> None:
        if self.iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {self.iterations}")

    def __call__(self, iteration: int) -> int:
        """The per-mille target of iteration ``iteration`` (0-based; the last is ``target``)."""
        if not 0 <= iteration < self.iterations:
            raise ValueError(f"iteration must lie in [0, {self.iterations}), got {iteration}")
        return math.floor((iteration + 1) * self.target / self.iterations)

    @property
    def targets(self) -> list[int]:
        """The k targets, non-decreasing, the last equal to ``target``."""
        return [self(i) for i in range(self.iterations)]


def iterative_targets(target: int, iterations: int) -> list[int]:
    """``IterativeSchedule(target, iterations).targets``: Han's cumulative per-mille targets.

    Args:
        target: Final per-mille of removed weights (e.g. 900).
        iterations: Number k of prune/fine-tune iterations, ≥ 1.

    Returns:
        The k targets, non-decreasing, the last equal to ``target``.

    Raises:
        ValueError: If ``iterations`` < 1.
    """
    return IterativeSchedule(target, iterations).targets


@dataclass(frozen=True)
class ExponentialSchedule:
    """a_t = a_min·(a_max/a_min)^{t/T}: a_0 = a_min, a_T = a_max, log a_t affine in t (SWD's coefficient).

    t is the global mini-batch index (epoch·B + batch), T = E·B, so the value depends on t only and a resumed
    run continues where it stopped. Past T the value stays at a_max. A constant a (the reference ``fix_a``) is
    ``a_min == a_max``.

    Args:
        a_min: Value at t = 0, > 0.
        a_max: Value at t = T, > 0.
        total_steps: T, the number of mini-batches of the regularised phase, ≥ 1.

    Raises:
        ValueError: If a bound is not positive or ``total_steps`` < 1.
    """

    a_min: float
    a_max: float
    total_steps: int

    def __post_init__(self) -> None:
        if not (self.a_min > 0 and self.a_max > 0):
            raise ValueError(f"a_min and a_max must be positive, got a_min={self.a_min}, a_max={self.a_max}")
        if self.total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {self.total_steps}")
        # Stored as plain numbers: a checkpoint and a comparison never see a tensor or a numpy scalar.
        object.__setattr__(self, "a_min", float(self.a_min))
        object.__setattr__(self, "a_max", float(self.a_max))
        object.__setattr__(self, "total_steps", int(self.total_steps))

    def __call__(self, step: int) -> float:
        """Value of a at global step ``step`` (≥ 0)."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        progress = min(step, self.total_steps) / self.total_steps
        return self.a_min * math.exp(progress * math.log(self.a_max / self.a_min))

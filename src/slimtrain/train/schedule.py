"""Per-step learning-rate schedules (linear, cosine, multistep; each with optional linear warm-up).

The schedule is a pure function of the step, so it needs no state of its own in a checkpoint and survives
optimizers that are re-created during training.
"""

from __future__ import annotations

import bisect
import math

import torch

from slimtrain.train.config import ScheduleConfig


class LRSchedule:
    """Learning-rate factor per optimizer step.

    Args:
        config: the recipe's schedule section (milestones and warm-up in epochs).
        steps_per_epoch: optimizer steps per epoch.
        total_steps: optimizer steps of the whole run.
    """

    def __init__(self, config: ScheduleConfig, steps_per_epoch: int, total_steps: int) -> None:
        self.config = config
        self.total_steps = max(1, total_steps)
        self.warmup_steps = round(config.warmup_epochs * steps_per_epoch)
        self.milestones = [round(m * steps_per_epoch) for m in config.milestones]

    def factor(self, step: int) -> float:
        """Multiplier of the initial learning rate at optimizer step ``step`` (0-based)."""
        cfg = self.config
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if cfg.name == "constant":
            return 1.0
        if cfg.name == "multistep":
            return cfg.gamma ** bisect.bisect_right(self.milestones, step)
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        floor = cfg.final_lr_fraction
        if cfg.name == "linear":
            return 1.0 - (1.0 - floor) * progress
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_lr_factor(optimizer: torch.optim.Optimizer, factor: float) -> None:
    """Set every param group's ``lr`` to ``initial_lr × factor`` (``initial_lr``: its first ``lr``)."""
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
        group["lr"] = group["initial_lr"] * factor

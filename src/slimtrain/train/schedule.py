"""Learning-rate schedules (linear, cosine, multistep, plateau; each with optional linear warm-up).

The schedule sets a factor of each param group's initial rate before every step, so it survives optimizers
that are re-created during training. Linear, cosine and multistep are pure functions of the step; plateau
cuts the rate when the epoch's mean training loss stops decreasing (:class:`LossPlateau`), and its state is
part of the trainer's checkpoint.
"""

from __future__ import annotations

import bisect
import math
from typing import Any

import torch

from slimtrain.train.config import PlateauConfig, ScheduleConfig


class LossPlateau:
    """``torch.optim.lr_scheduler.ReduceLROnPlateau`` (mode ``min``) on one rate, stepped once per epoch.

    The rate follows torch's arithmetic exactly (``max(lr · factor, min_lr)``, skipped when the cut is not
    above ``eps``), so :attr:`factor` equals torch's learning rate divided by ``base_lr`` for the same losses.

    Args:
        config: factor, patience, threshold and its mode, cooldown, min_lr and eps (torch's meanings).
        base_lr: the initial rate (the recipe's ``optimizer.lr``); ``min_lr`` and ``eps`` are rates like it.
    """

    def __init__(self, config: PlateauConfig, base_lr: float) -> None:
        self.config = config
        self.base_lr = base_lr
        self.lr = base_lr
        self.best = math.inf
        self.bad_epochs = 0
        self.cooldown_left = 0

    @property
    def factor(self) -> float:
        """The current rate as a multiple of ``base_lr``."""
        return self.lr / self.base_lr

    def _improves(self, loss: float) -> bool:
        cfg = self.config
        if cfg.threshold_mode == "rel":
            return loss < self.best * (1.0 - cfg.threshold)
        return loss < self.best - cfg.threshold

    def step(self, loss: float) -> None:
        """Record one epoch's mean training loss; cut the rate after more than ``patience`` bad epochs."""
        cfg = self.config
        if self._improves(loss):
            self.best, self.bad_epochs = loss, 0
        else:
            self.bad_epochs += 1
        if self.cooldown_left > 0:  # bad epochs in the cooldown after a cut do not count
            self.cooldown_left -= 1
            self.bad_epochs = 0
        if self.bad_epochs > cfg.patience:
            cut = max(self.lr * cfg.factor, cfg.min_lr)
            if self.lr - cut > cfg.eps:
                self.lr = cut
            self.cooldown_left, self.bad_epochs = cfg.cooldown, 0

    def state_dict(self) -> dict[str, Any]:
        """Best loss, bad epochs, cooldown left and the current rate (plain numbers)."""
        return {
            "best": self.best,
            "bad_epochs": self.bad_epochs,
            "cooldown_left": self.cooldown_left,
            "lr": self.lr,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.best, self.lr = float(state["best"]), float(state["lr"])
        self.bad_epochs, self.cooldown_left = int(state["bad_epochs"]), int(state["cooldown_left"])


class LRSchedule:
    """Learning-rate factor per optimizer step.

    Args:
        config: the recipe's schedule section (milestones and warm-up in epochs).
        steps_per_epoch: optimizer steps per epoch.
        total_steps: optimizer steps of the whole run.
        base_lr: the initial rate, against which plateau's ``min_lr`` and ``eps`` are measured.
    """

    def __init__(
        self, config: ScheduleConfig, steps_per_epoch: int, total_steps: int, base_lr: float = 1.0
    ) -> None:
        self.config = config
        self.total_steps = max(1, total_steps)
        self.warmup_steps = round(config.warmup_epochs * steps_per_epoch)
        self.milestones = [round(m * steps_per_epoch) for m in config.milestones]
        self.plateau = LossPlateau(config.plateau, base_lr) if config.name == "plateau" else None

    def factor(self, step: int) -> float:
        """Multiplier of the initial learning rate at optimizer step ``step`` (0-based)."""
        cfg = self.config
        warmup = (step + 1) / self.warmup_steps if step < self.warmup_steps else 1.0
        if self.plateau is not None:  # a warm-up ramps to the plateau's current factor
            return warmup * self.plateau.factor
        if step < self.warmup_steps:
            return warmup
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

    def end_epoch(self, train_loss: float) -> None:
        """Feed a completed epoch's mean training loss to the plateau rule (other schedules ignore it)."""
        if self.plateau is not None:
            self.plateau.step(train_loss)

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps: the plateau's state, or nothing for the pure schedules."""
        return self.plateau.state_dict() if self.plateau is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (an empty state, as from a run before plateau existed, is the start)."""
        if self.plateau is not None and state:
            self.plateau.load_state_dict(state)


def set_lr_factor(optimizer: torch.optim.Optimizer, factor: float) -> None:
    """Set every param group's ``lr`` to ``initial_lr × factor`` (``initial_lr``: its first ``lr``)."""
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
        group["lr"] = group["initial_lr"] * factor

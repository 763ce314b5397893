"""Learning-rate schedules: values at start, warm-up, milestones and end are those of their formulas."""

import math

import pytest
import torch

from slimtrain.train.config import ScheduleConfig
from slimtrain.train.schedule import LRSchedule, set_lr_factor


def test_cosine_start_middle_end():
    """Cosine decays from 1 to the floor, passing the midpoint value at half the steps."""
    schedule = LRSchedule(
        ScheduleConfig(name="cosine", final_lr_fraction=0.1), steps_per_epoch=10, total_steps=100
    )
    assert schedule.factor(0) == pytest.approx(1.0)
    assert schedule.factor(50) == pytest.approx(0.1 + 0.9 * 0.5)
    assert schedule.factor(100) == pytest.approx(0.1)


def test_linear_with_warmup():
    """Warm-up ramps linearly to 1 over its steps, then the linear decay reaches 0 at the end."""
    schedule = LRSchedule(ScheduleConfig(name="linear", warmup_epochs=1), steps_per_epoch=10, total_steps=110)
    assert [schedule.factor(s) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert schedule.factor(10) == pytest.approx(1.0)
    assert schedule.factor(60) == pytest.approx(0.5)
    assert schedule.factor(110) == pytest.approx(0.0)


def test_multistep_milestones_in_epochs():
    """Multistep multiplies by gamma at each milestone epoch (converted to steps)."""
    schedule = LRSchedule(ScheduleConfig(name="multistep", milestones=[2, 4], gamma=0.1), 5, 30)
    assert [schedule.factor(s) for s in (9, 10, 19, 20)] == pytest.approx([1.0, 0.1, 0.1, 0.01])


def test_set_lr_factor_scales_initial_lr_of_every_group():
    """set_lr_factor sets each group's lr to its own initial lr times the factor, repeatedly without drift."""
    p1, p2 = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [p1], "lr": 0.2}, {"params": [p2], "lr": 0.02}], lr=0.1)
    schedule = LRSchedule(ScheduleConfig(name="cosine"), 1, 4)
    for step in range(4):
        set_lr_factor(opt, schedule.factor(step))
    expected = 0.5 * (1 + math.cos(math.pi * 3 / 4))
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.2 * expected, 0.02 * expected])

"""The plateau schedule: torch's ReduceLROnPlateau rule on the epoch's training loss, checkpointed."""

import math

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from slimtrain.errors import RecipeError
from slimtrain.train.config import PlateauConfig, ScheduleConfig, recipe_from_dict
from slimtrain.train.schedule import LossPlateau, LRSchedule

# Repeated values make plateaus (equal losses are never an improvement); small steps probe the threshold.
LOSSES = st.lists(
    st.one_of(st.sampled_from([0.5, 1.0, 1.0 - 1e-5, 2.0]), st.floats(0.0, 3.0)), min_size=1, max_size=40
)
SETTINGS = st.fixed_dictionaries(
    {
        "factor": st.floats(0.01, 0.99),
        "patience": st.integers(0, 4),
        "threshold": st.one_of(st.just(0.0), st.just(1e-4), st.floats(0.0, 0.5)),
        "threshold_mode": st.sampled_from(["rel", "abs"]),
        "cooldown": st.integers(0, 3),
        "min_lr": st.one_of(st.just(0.0), st.floats(0.0, 0.05)),
        "eps": st.one_of(st.just(1e-8), st.just(0.0), st.floats(0.0, 1e-3)),
    }
)


@settings(max_examples=150, deadline=None)
@given(losses=LOSSES, options=SETTINGS, base_lr=st.floats(1e-4, 1.0))
@example(  # a cut of exactly eps is skipped
    losses=[1.0, 1.0, 1.0],
    options={
        "factor": 0.5,
        "patience": 0,
        "threshold": 0.0,
        "threshold_mode": "rel",
        "cooldown": 0,
        "min_lr": 0.0,
        "eps": 0.5,
    },
    base_lr=1.0,
)
def test_factor_is_torch_reduce_lr_on_plateau_rate_over_base_lr(losses, options, base_lr):
    """Fed the same epoch losses, the plateau factor is exactly torch's learning rate / base lr after every
    epoch, and best loss, bad-epoch count and cooldown agree with torch's scheduler.
    """
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base_lr)
    reference = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", **options)
    plateau = LossPlateau(PlateauConfig(**options), base_lr)
    for loss in losses:
        reference.step(loss)
        plateau.step(loss)
        assert plateau.factor == optimizer.param_groups[0]["lr"] / base_lr
        assert (plateau.best, plateau.bad_epochs, plateau.cooldown_left) == (
            reference.best,
            reference.num_bad_epochs,
            reference.cooldown_counter,
        )


def test_schedule_cuts_after_patience_ramps_warmup_to_the_current_factor_and_restores_its_state():
    """Warm-up ramps to the plateau's factor; the factor drops after ``patience`` bad epochs, never below
    ``min_lr``; a schedule loaded from the state dict continues identically.
    """
    config = ScheduleConfig(name="plateau", warmup_epochs=1, plateau={"patience": 1, "min_lr": 0.004})
    schedule = LRSchedule(config, steps_per_epoch=4, total_steps=40, base_lr=0.1)
    assert [schedule.factor(s) for s in range(5)] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0])
    for loss in (1.0, 1.0, 1.0):  # best, then two bad epochs: the second exceeds patience 1
        schedule.end_epoch(loss)
    assert schedule.factor(5) == pytest.approx(0.1)
    for loss in (1.0, 1.0):
        schedule.end_epoch(loss)
    assert schedule.factor(5) == pytest.approx(0.04)  # 0.001 would be below min_lr 0.004
    copy = LRSchedule(config, steps_per_epoch=4, total_steps=40, base_lr=0.1)
    copy.load_state_dict(schedule.state_dict())
    for loss in (0.5, 0.6, 0.7, 0.8):
        schedule.end_epoch(loss)
        copy.end_epoch(loss)
        assert copy.state_dict() == schedule.state_dict()
    fixed = LRSchedule(ScheduleConfig(name="constant"), 4, 40)
    fixed.end_epoch(math.inf)  # the pure schedules have no state and ignore the loss
    assert fixed.state_dict() == {} and fixed.factor(39) == 1.0


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("schedule.plateau.factor=1.0", "schedule.plateau.factor"),
        ("schedule.plateau.factor=0", "schedule.plateau.factor"),
        ("schedule.plateau.patience=-1", "schedule.plateau.patience"),
        ("schedule.plateau.patience=1.5", "schedule.plateau.patience"),
        ("schedule.plateau.threshold=-0.1", "schedule.plateau.threshold"),
        ("schedule.plateau.threshold_mode=relative", "schedule.plateau.threshold_mode"),
        ("schedule.plateau.cooldown=-2", "schedule.plateau.cooldown"),
        ("schedule.plateau.min_lr=-1e-3", "schedule.plateau.min_lr"),
        ("schedule.plateau.eps=.nan", "schedule.plateau.eps"),
        ("schedule.plateau.mode=max", "schedule.plateau.mode"),
    ],
)
def test_bad_plateau_setting_is_refused_naming_its_key(override, key):
    """Every plateau setting is validated, and the error names the key."""
    with pytest.raises(RecipeError, match=f"'{key}'"):
        recipe_from_dict({"schedule": {"name": "plateau"}}, [override])

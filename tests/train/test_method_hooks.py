"""The trainer's method hooks: the learning-rate factor a method chooses, several optimizers per method."""

import csv

import pytest
import torch
from torch import nn

import slimtrain.train.method as method_module
from slimtrain.train.checkpoint import CheckpointStore
from slimtrain.train.config import recipe_from_dict
from slimtrain.train.method import (
    Method,
    StepOutput,
    register_method,
    trainable_parameters,
)
from slimtrain.train.trainer import Trainer

SMALL = {
    "data": {"name": "digits", "val_fraction": 0.2},
    "model": {"name": "mlp", "kwargs": {"widths": [16]}},
    "optimizer": {"lr": 0.05, "momentum": 0.9},
    "schedule": {"name": "cosine", "warmup_epochs": 0.5},
    "train": {
        "epochs": 2,
        "batch_size": 64,
        "progress": False,
        "tensorboard": False,
        "log_every_steps": 1,
        "checkpoint_every_steps": 7,
    },
}


@pytest.fixture
def isolated_registry():
    """Methods registered by a test are forgotten afterwards (entry points are loaded first)."""
    with method_module.METHODS.scratch():
        yield


def _recipe(name, method):
    return recipe_from_dict({**SMALL, "name": name, "method": {"name": method}})


class HalfRate(Method):
    """Trains at half the scheduled rate, and records the rate each step trained with."""

    name = "test-half-rate"

    def __init__(self, options, recipe):
        super().__init__(options, recipe)
        self.calls = []
        self.rates = []

    def lr_factor(self, step, scheduled):
        self.calls.append(step)
        return 0.5 * scheduled

    def training_step(self, model, inputs, targets, ctx):
        self.rates.append((ctx.step, self.optimizer.param_groups[0]["lr"]))
        return super().training_step(model, inputs, targets, ctx)


def test_the_method_chooses_the_factor_once_per_step(tmp_path, isolated_registry):
    """`lr_factor` is asked once per step; the step trains at initial_lr × that factor, which is logged."""
    register_method(HalfRate)
    trainer = Trainer(_recipe("half", "test-half-rate"), tmp_path / "half")
    trainer.fit()
    method = trainer.components.method
    assert method.calls == list(range(trainer.total_steps))
    expected = {step: 0.05 * (0.5 * trainer.schedule.factor(step)) for step in range(trainer.total_steps)}
    assert dict(method.rates) == expected
    with (tmp_path / "half" / "train_log.csv").open() as handle:
        logged = {int(row["step"]) - 1: float(row["lr_factor"]) for row in csv.DictReader(handle)}
    assert logged == {step: 0.5 * trainer.schedule.factor(step) for step in range(trainer.total_steps)}


class TwoOptimizers(Method):
    """One optimizer for the hidden layer and another one, at its own rate, for the classifier."""

    name = "test-two-optimizers"

    def __init__(self, options, recipe):
        super().__init__(options, recipe)
        self.second: torch.optim.Optimizer | None = None
        self.rates = []

    def build_optimizer(self, model):
        params = trainable_parameters(model)
        self.optimizer = torch.optim.SGD(params[:2], lr=0.05, momentum=0.9)
        self.second = torch.optim.SGD(params[2:], lr=0.02, momentum=0.9)
        return self.optimizer

    def optimizers(self):
        return [self.optimizer, self.second]

    def training_step(self, model, inputs, targets, ctx):
        self.rates.append((ctx.step, *(o.param_groups[0]["lr"] for o in self.optimizers())))
        for optimizer in self.optimizers():  # one pass per optimizer, as a multi-pass step would
            optimizer.zero_grad(set_to_none=True)
            logits = model(inputs)
            loss = nn.functional.cross_entropy(logits, targets)
            ctx.backward(loss, trainable_parameters(model))
            optimizer.step()
        return StepOutput(loss=loss.detach(), logits=logits.detach())


def test_every_optimizer_is_scheduled_and_resumed(tmp_path, train_until_killed, isolated_registry):
    """Each optimizer a method declares follows the schedule from its own initial rate, is checkpointed,
    and a run killed mid-epoch and resumed ends with the uninterrupted weights and optimizer states.
    """
    register_method(TwoOptimizers)
    recipe = _recipe("two", "test-two-optimizers")
    full = Trainer(recipe, tmp_path / "full")
    full.fit()
    factor = full.schedule.factor
    assert full.components.method.rates == [
        (step, 0.05 * factor(step), 0.02 * factor(step)) for step in range(full.total_steps)
    ]
    assert full.grad_evals == 2 * full.total_steps

    train_until_killed(recipe, tmp_path / "split", step=10)
    state, _ = CheckpointStore(tmp_path / "split" / "checkpoints").load_latest()
    assert state["step"] == 7 and len(state["other_optimizers"]) == 1
    resumed = Trainer(recipe, tmp_path / "split")
    resumed.fit(resume=True)
    assert resumed.components.method.rates == full.components.method.rates[7:]
    for name, value in full.components.model.state_dict().items():
        assert torch.equal(value, resumed.components.model.state_dict()[name]), name
    for a, b in zip(full.components.method.optimizers(), resumed.components.method.optimizers(), strict=True):
        for pa, pb in zip(a.param_groups[0]["params"], b.param_groups[0]["params"], strict=True):
            assert torch.equal(a.state[pa]["momentum_buffer"], b.state[pb]["momentum_buffer"])


def test_default_hooks():
    """By default the method's optimizers are its `optimizer` (none before it is built), the factor is the
    scheduled one, and the dense reference is a copy that leaves the model alone.
    """
    recipe = recipe_from_dict({**SMALL, "name": "d"})
    method = Method(method_module.NoOptions(), recipe)
    assert method.optimizers() == [] and method.lr_factor(3, 0.25) == 0.25
    model = nn.Sequential(nn.Linear(4, 3))
    method.build_optimizer(model)
    assert method.optimizers() == [method.optimizer]
    reference = method.dense_reference(model)
    assert reference is not model and reference[0].weight is not model[0].weight
    assert torch.equal(reference[0].weight, model[0].weight)

"""The ``swd`` and ``swd-structured`` training methods through the engine: exact final sparsity, resume,
two-rank data parallelism, stability warning and option errors.
"""

import math
import warnings

import pytest
import torch

from slimtrain.errors import RecipeError
from slimtrain.swd import ChannelGraph, parameter_budget, population_weights
from slimtrain.train.config import recipe_from_dict
from slimtrain.train.launch import train_multiprocess
from slimtrain.train.trainer import Trainer


def _zeros(model):
    weights = population_weights(model)
    return sum(int((w == 0).sum()) for w in weights.values()), sum(w.numel() for w in weights.values())


@pytest.mark.parametrize("target", [0.9, 0.995])
def test_swd_ends_with_exactly_the_target_sparsity(tmp_path, target, trees, method_recipe):
    """After training, exactly ⌊target·n⌋ conv/linear weights are zero (the stated population), and the
    evaluation sweep takes the model as it is.
    """
    trainer = Trainer(method_recipe(trees["mlp"], "swd", target=target), tmp_path / "run")
    trainer.fit()
    zeros, n = _zeros(trainer.components.model)
    assert zeros == math.floor(round(target * 1000) * n / 1000)
    method = trainer.components.method
    assert method.compress(trainer.components.model, "unstructured", 0.5, None) is trainer.components.model


def test_swd_a_follows_the_global_step(tmp_path, trees, method_recipe):
    """The final a equals a_min·(a_max/a_min)^((T−1)/T): the schedule spans the run's total steps."""
    trainer = Trainer(method_recipe(trees["mlp"], "swd", target=0.9, a_min=0.1, a_max=1e3), tmp_path / "run")
    trainer.fit()
    t, total = trainer.total_steps - 1, trainer.total_steps
    assert trainer.components.method.swd.a == pytest.approx(0.1 * 1e4 ** (t / total), rel=1e-12)


def test_swd_resume_reaches_the_same_weights(tmp_path, train_until_killed, trees, method_recipe):
    """A run killed mid-epoch and resumed ends with the weights, masks and schedule position of an
    uninterrupted one.
    """
    recipe = method_recipe(trees["mlp"], "swd", target=0.95, a_max=1e3)
    full = Trainer(recipe, tmp_path / "full")
    full.fit()
    train_until_killed(recipe, tmp_path / "split", step=10)
    resumed = Trainer(recipe, tmp_path / "split")
    resumed.fit(resume=True)
    assert resumed.components.method.state_dict() == full.components.method.state_dict()
    assert resumed.components.method.swd.a == full.components.method.swd.a
    for name, value in full.components.model.state_dict().items():
        assert torch.equal(value, resumed.components.model.state_dict()[name]), name


def test_swd_two_ranks_end_identical(tmp_path, trees):
    """Under two-process data parallelism both ranks end with bitwise-identical weights, hence masks."""
    tree = {**trees["mlp"], "train": {**trees["mlp"]["train"], "batch_size": 32, "max_steps": 12}}
    recipe = recipe_from_dict({**tree, "name": "ddp", "method": {"name": "swd", "options": {"target": 0.9}}})
    states = train_multiprocess(recipe, tmp_path / "ddp", world_size=2)
    for name, value in states[0]["model"].items():
        assert torch.equal(value, states[1]["model"][name]), name
    weights = [v for k, v in states[0]["model"].items() if k.endswith("weight")]
    n = sum(w.numel() for w in weights)
    assert sum(int((w == 0).sum()) for w in weights) == math.floor(0.9 * n)


def test_structured_swd_meets_the_parameter_budget(tmp_path, trees, method_recipe):
    """Structured SWD ends with the analytic surviving count ≤ ⌊(1 − target)·N⌋, and every gated-off
    channel (γ below the threshold) has γ = β = 0.
    """
    trainer = Trainer(
        method_recipe(trees["resnet"], "swd-structured", target=0.5, a_max=1e3, channel_model="reference"),
        tmp_path / "run",
    )
    trainer.fit()
    model = trainer.components.model
    graph = ChannelGraph.from_model(model)
    gammas = torch.cat([model.get_submodule(g).weight.detach().abs() for g in graph.gates])
    assert (gammas == 0).any()
    threshold = float(gammas[gammas > 0].min())
    assert graph.parameter_count(model, threshold) <= parameter_budget(model, 500)
    for gate in graph.gates:
        norm = model.get_submodule(gate)
        off = norm.weight == 0
        assert torch.equal(norm.bias[off], torch.zeros_like(norm.bias[off])), gate


def test_stability_guard_warns(tmp_path, trees):
    """With η·μ·(1 + a) ≥ 2(1 + β) (constant lr 0.1, μ = 5e-4, a = 1e5) training warns once."""
    tree = {
        **trees["mlp"],
        "schedule": {"name": "constant"},
        "optimizer": {**trees["mlp"]["optimizer"], "lr": 0.1},
    }
    tree["train"] = {**trees["mlp"]["train"], "max_steps": 2}
    recipe = recipe_from_dict({**tree, "name": "w", "method": {"name": "swd", "options": {"a_min": 1e5}}})
    with pytest.warns(RuntimeWarning, match="SWD may diverge"):
        Trainer(recipe, tmp_path / "run").fit()


def test_stable_settings_do_not_warn(tmp_path, trees, method_recipe):
    """The reference scale (cosine schedule, a up to 1e3) stays below the bound: no warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        tree = {**trees["mlp"], "train": {**trees["mlp"]["train"], "max_steps": 3}}
        Trainer(method_recipe(tree, "swd", a_max=1e3), tmp_path / "run").fit()


@pytest.mark.parametrize(
    ("method", "options", "key"),
    [
        ("swd", {"targt": 0.9}, "targt"),
        ("swd", {"target": 1.0}, "target"),
        ("swd", {"a_min": 10.0, "a_max": 1.0}, "a_max"),
        ("swd-structured", {"population": "reference"}, "population"),
    ],
)
def test_option_errors_name_the_key(method, options, key, trees, method_recipe):
    """A bad option is refused with a message naming the key."""
    with pytest.raises(RecipeError, match=key):
        method_recipe(trees["mlp"], method, **options)

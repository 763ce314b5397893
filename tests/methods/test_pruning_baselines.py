"""The pruning baselines through the engine (magnitude + fine-tuning, LR rewinding, gradual magnitude
pruning, network slimming): exact final sparsity inside the epoch budget, masks held after every step,
channel pruning within the parameter budget, resume, two-rank data parallelism and option errors.
"""

import csv
import math

import pytest
import torch

from slimtrain.errors import RecipeError
from slimtrain.swd import ChannelGraph, parameter_budget, population_weights
from slimtrain.train.config import recipe_from_dict
from slimtrain.train.launch import train_multiprocess
from slimtrain.train.trainer import Trainer

UNSTRUCTURED = [
    ("magnitude-ft", {}),
    ("magnitude-ft", {"iterations": 3, "prune_at": 0.3}),
    ("lr-rewinding", {}),
    ("gmp", {"frequency": 3}),
]


def _zero_count(model):
    weights = population_weights(model)
    return sum(int((w == 0).sum()) for w in weights.values()), sum(w.numel() for w in weights.values())


def _watch_masks(trainer, seen):
    """Wrap the training step: after it, every masked-out entry must be exactly zero."""
    method = trainer.components.method
    original = method.training_step

    def checked(model, inputs, targets, ctx):
        out = original(model, inputs, targets, ctx)
        params = dict(model.named_parameters())
        for name, mask in (method.masks or {}).items():
            assert not params[name][~mask].any(), (ctx.step, name)
        seen.append((ctx.step, method.stage, float(method.optimizer.param_groups[0]["lr"])))
        return out

    method.training_step = checked


@pytest.mark.parametrize(("method", "options"), UNSTRUCTURED)
def test_final_sparsity_is_the_target_and_masks_hold(tmp_path, method, options, trees, method_recipe):
    """Within train.epochs, the run ends with exactly ⌊0.9·n⌋ zero conv/linear weights; after every step
    following the first pruning the masked-out entries are exactly zero.
    """
    trainer = Trainer(method_recipe(trees["mlp"], method, target=0.9, **options), tmp_path / "run")
    seen = []
    _watch_masks(trainer, seen)
    results = trainer.fit()
    zeros, n = _zero_count(trainer.components.model)
    assert zeros == math.floor(0.9 * n)
    assert results["epochs"] == 2
    assert seen[-1][1] >= 1


def test_iterative_pruning_removes_cumulative_shares(trees, method_recipe):
    """magnitude-ft with k = 3 prunes ⌊i·K/3⌋ weights at iteration i, the last at the full target K."""
    trainer = Trainer(
        method_recipe(trees["mlp"], "magnitude-ft", target=0.9, iterations=3, prune_at=0.3), None
    )
    method, model = trainer.components.method, trainer.components.model
    starts = method.prune_steps(trainer.total_steps)
    assert starts[0] == int(0.3 * trainer.total_steps) and starts == sorted(set(starts))
    n = sum(w.numel() for w in population_weights(model).values())
    for stage in (1, 2, 3):
        method._prune(model, stage)
        assert _zero_count(model)[0] == stage * math.floor(0.9 * n) // 3


def test_lr_rewinding_restarts_the_learning_rate(tmp_path, trees, method_recipe):
    """At the pruning step lr-rewinding trains at the initial learning rate again; magnitude-ft continues
    the cosine schedule (a lower rate). The ``lr_factor`` column of ``train_log.csv`` shows the rate each
    step really used.
    """
    lrs, logged = {}, {}
    for method in ("lr-rewinding", "magnitude-ft"):
        tree = {**trees["mlp"], "train": {**trees["mlp"]["train"], "log_every_steps": 1}}
        trainer = Trainer(method_recipe(tree, method, target=0.9, prune_at=0.5), tmp_path / method)
        seen = []
        _watch_masks(trainer, seen)
        trainer.fit()
        prune_step = trainer.components.method.prune_steps(trainer.total_steps)[0]
        lrs[method] = dict((step, lr) for step, _, lr in seen)[prune_step]
        with (tmp_path / method / "train_log.csv").open() as handle:
            factors = {int(row["step"]) - 1: float(row["lr_factor"]) for row in csv.DictReader(handle)}
        logged[method] = factors[prune_step]
        assert all(factors[step] == pytest.approx(lr / 0.05) for step, _, lr in seen), method
    assert lrs["lr-rewinding"] == pytest.approx(0.05)
    assert lrs["magnitude-ft"] < 0.05 * 0.6
    assert logged["lr-rewinding"] == pytest.approx(1.0)


def test_gmp_sparsity_rises_monotonically_to_the_target(trees, method_recipe):
    """The scheduled sparsity is 0 before begin, non-decreasing, and the target from end on."""
    trainer = Trainer(method_recipe(trees["mlp"], "gmp", target=0.9, begin=0.2, end=0.6, frequency=2), None)
    method, total = trainer.components.method, trainer.total_steps
    values = [method.sparsity_at(step, total) for step in range(total)]
    assert values[0] == 0.0 and values == sorted(values)
    assert values[int(0.6 * total)] == 0.9 and values[-1] == 0.9


@pytest.mark.parametrize(("method", "options"), [UNSTRUCTURED[1], UNSTRUCTURED[3]])
def test_resume_reaches_the_same_weights(tmp_path, method, options, train_until_killed, trees, method_recipe):
    """A run killed mid-epoch after its first pruning and resumed ends with the weights, masks and
    pruning stage of an uninterrupted run.
    """
    recipe = method_recipe(trees["mlp"], method, target=0.9, **options)
    full = Trainer(recipe, tmp_path / "full")
    full.fit()
    train_until_killed(recipe, tmp_path / "split", step=30)
    resumed = Trainer(recipe, tmp_path / "split")
    resumed.fit(resume=True)
    a, b = full.components.method, resumed.components.method
    assert a.stage == b.stage
    assert a.masks.keys() == b.masks.keys()
    for name in a.masks:
        assert torch.equal(a.masks[name], b.masks[name]), name
    for name, value in full.components.model.state_dict().items():
        assert torch.equal(value, resumed.components.model.state_dict()[name]), name


def test_two_ranks_end_identical(tmp_path, trees):
    """Under two-process data parallelism, gradual pruning leaves both ranks with identical weights and
    masks (the masks come from identical weights).
    """
    tree = {**trees["mlp"], "train": {**trees["mlp"]["train"], "batch_size": 32, "max_steps": 12}}
    recipe = recipe_from_dict(
        {**tree, "name": "ddp", "method": {"name": "gmp", "options": {"target": 0.9, "frequency": 2}}}
    )
    states = train_multiprocess(recipe, tmp_path / "ddp", world_size=2)
    for name, value in states[0]["model"].items():
        assert torch.equal(value, states[1]["model"][name]), name
    for name, mask in states[0]["method"]["masks"].items():
        assert torch.equal(mask, states[1]["method"]["masks"][name]), name


CHANNELS = [
    ("network-slimming", {"prune_at": 0.5}),
    ("magnitude-ft", {"granularity": "channels"}),
    ("lr-rewinding", {"granularity": "channels", "iterations": 2, "prune_at": 0.3}),
    ("gmp", {"granularity": "channels", "begin": 0.2, "end": 0.7, "frequency": 1}),
]


def _removed_channels(model, graph):
    return {
        (g, c) for g in graph.gates for c in (model.get_submodule(g).weight == 0).nonzero().flatten().tolist()
    }


@pytest.mark.parametrize(("method", "options"), CHANNELS)
def test_channel_pruning_meets_the_budget_and_holds_masks(
    tmp_path, monkeypatch, method, options, trees, method_recipe
):
    """Channel pruning (network slimming, and the baselines with ``granularity: channels``) ends within the
    parameter budget (analytic count ≤ ⌊(1 − target)·N⌋) with γ and β of every removed channel exactly zero
    after every step that follows the first pruning. The model is traced once, however often it is pruned.
    """
    traces = []
    trace = ChannelGraph.from_model
    monkeypatch.setattr(ChannelGraph, "from_model", lambda *a, **k: traces.append(1) or trace(*a, **k))
    recipe = method_recipe(trees["resnet"], method, target=0.5, channel_model="reference", **options)
    trainer = Trainer(recipe, tmp_path / "run")
    assert trainer.components.method.structures == ("filter",)
    seen = []
    _watch_masks(trainer, seen)
    trainer.fit()
    assert len(traces) == 1
    model = trainer.components.model
    graph = ChannelGraph.from_model(model)
    removed = _removed_channels(model, graph)
    assert removed
    for gate, channel in removed:
        assert model.get_submodule(gate).bias[channel] == 0, (gate, channel)
    gammas = torch.cat([model.get_submodule(g).weight.detach().abs() for g in graph.gates])
    threshold = float(gammas[gammas > 0].min())
    assert graph.parameter_count(model, threshold) <= parameter_budget(model, 500)
    stages = [stage for _, stage, _ in seen]
    assert stages == sorted(stages) and stages[0] == 0 and stages[-1] >= 1


def test_network_slimming_prunes_at_prune_at(tmp_path, trees, method_recipe):
    """Network slimming trains with its penalty for ``prune_at`` of the steps, then prunes once."""
    trainer = Trainer(
        method_recipe(trees["resnet"], "network-slimming", target=0.5, prune_at=0.5), tmp_path / "run"
    )
    seen = []
    _watch_masks(trainer, seen)
    trainer.fit()
    assert [stage for _, stage, _ in seen] == [0, 0, 0, 1, 1, 1]


def test_iterative_channel_pruning_removes_growing_nested_sets(trees, method_recipe):
    """magnitude-ft by channels with k = 3: iteration i meets the budget of i/3 of the target, and every
    channel removed at one iteration stays removed at the next.
    """
    recipe = method_recipe(
        trees["resnet"],
        "magnitude-ft",
        target=0.6,
        iterations=3,
        granularity="channels",
        channel_model="reference",
    )
    trainer = Trainer(recipe, None)
    method, model = trainer.components.method, trainer.components.model
    graph = ChannelGraph.from_model(model)
    torch.manual_seed(0)
    for gate in graph.gates:  # distinct |γ| (at initialisation they all equal 1)
        model.get_submodule(gate).weight.data.uniform_(0.1, 1.0)
    before: set = set()
    for stage in (1, 2, 3):
        method._prune(model, stage)
        removed = _removed_channels(model, graph)
        assert before < removed, stage
        before = removed
        gammas = torch.cat([model.get_submodule(g).weight.detach().abs() for g in graph.gates])
        count = graph.parameter_count(model, float(gammas[gammas > 0].min()))
        assert count <= parameter_budget(model, 600 * stage / 3), stage


def test_channel_granularity_needs_batchnorm_gates(trees, method_recipe):
    """``granularity: channels`` without BatchNorm in the model is refused before training, naming the key."""
    with pytest.raises(RecipeError, match="granularity"):
        Trainer(method_recipe(trees["mlp"], "gmp", target=0.5, granularity="channels"), None)


@pytest.mark.parametrize(
    ("method", "options", "key"),
    [
        ("magnitude-ft", {"iteratons": 2}, "iteratons"),
        ("magnitude-ft", {"iterations": 0}, "iterations"),
        ("lr-rewinding", {"prune_at": 1.0}, "prune_at"),
        ("gmp", {"begin": 0.5, "end": 0.4}, "end"),
        ("network-slimming", {"strength": -1.0}, "strength"),
        ("gmp", {"granularity": "filters"}, "granularity"),
    ],
)
def test_option_errors_name_the_key(method, options, key, trees, method_recipe):
    """A bad option is refused with a message naming the key."""
    with pytest.raises(RecipeError, match=key):
        method_recipe(trees["mlp"], method, **options)

"""The SFW method plugin and its penalty baselines, trained through the engine on digits."""

import pytest
import torch
from torch import nn

from slimtrain.errors import RecipeError
from slimtrain.experiments.comparison import compare
from slimtrain.experiments.sweeping import sweep
from slimtrain.fw import SFW
from slimtrain.methods.sfw import SFWMethod
from slimtrain.methods.structured_penalties import (
    GroupLassoTraining,
    NuclearNormTraining,
    ProximalSVDTraining,
)
from slimtrain.train.checkpoint import CheckpointStore
from slimtrain.train.config import recipe_from_dict
from slimtrain.train.method import StepContext
from slimtrain.train.trainer import Trainer, build_run

LENET = {"name": "lenet5"}
SMALL = {
    "data": {"name": "digits", "val_fraction": 0.2},
    "model": {"name": "mlp", "kwargs": {"widths": [32]}},
    "optimizer": {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.0},
    "schedule": {"name": "linear"},
    "train": {"epochs": 1, "batch_size": 64, "progress": False, "tensorboard": False},
    "evaluation": {"levels": [0.0, 0.5, 0.9]},
}


def _recipe(name, options, model=None, **sections):
    tree = {**SMALL, "name": name, "method": {"name": "sfw", "options": {"n_draws": 5, **options}}}
    if model is not None:
        tree["model"] = model
    tree.update(sections)
    return recipe_from_dict(tree)


def _units(optimizer):
    """(set, tensor) pairs of every constraint unit of an SFW optimizer."""
    for group in optimizer.param_groups:
        c = group["constraint"]
        if isinstance(c, list):
            yield from zip(c, group["params"], strict=True)
        else:
            yield c, torch.cat([p.reshape(-1) for p in group["params"]])


@pytest.mark.parametrize(
    ("options", "model"),
    [
        ({"constraint": "k_support", "k": 0.3}, None),
        ({"constraint": "k_sparse", "k": 0.05, "k_min": 10, "momentum_convention": "ema"}, None),
        ({"constraint": "k_support", "global_mode": True, "rescale": "fast_gradient"}, None),
        ({"mode": "filter", "k": 0.5}, LENET),
        ({"mode": "lowrank", "constraint": "spectral_k_support", "k": 0.5}, LENET),
        ({"mode": "lowrank", "constraint": "nuclear", "rescale": "diameter"}, LENET),
    ],
    ids=["k_support", "k_sparse_miao", "global", "group", "spectral", "nuclear"],
)
def test_training_keeps_every_constrained_tensor_feasible(tmp_path, options, model):
    """After steps with real gradients every constraint unit satisfies ‖θ‖_C ≤ r(1 + 1e-5), every trainable
    tensor is constrained, and the logged max_gauge_ratio agrees.
    """
    recipe = _recipe("feasible", options, model, train={**SMALL["train"], "max_steps": 6})
    trainer = Trainer(recipe, tmp_path / "run")
    results = trainer.fit()
    optimizer = trainer.components.method.optimizer
    assert isinstance(optimizer, SFW)
    constrained = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert constrained == {id(p) for p in trainer.components.model.parameters()}
    for constraint, tensor in _units(optimizer):
        assert constraint.gauge(tensor.detach()) <= constraint.radius * (1 + 1e-5), constraint
    assert results["max_gauge_ratio"] <= 1 + 1e-5


def test_mode_sets_the_structures_a_sweep_accepts(tmp_path):
    """An SFW run in filter mode is swept with filter pruning only: asking for another structure fails."""
    recipe = _recipe("filter", {"mode": "filter"}, LENET, train={**SMALL["train"], "max_steps": 2})
    Trainer(recipe, tmp_path / "run").fit()
    with pytest.raises(ValueError, match="cannot compress with structure 'unstructured'"):
        sweep(tmp_path / "run", structure="unstructured")


@pytest.mark.parametrize(
    ("options", "culprit"),
    [
        ({"tau": -1.0}, "method.options.tau"),
        ({"kk": 0.3}, "method.options.kk"),
        ({"rescale": "sometimes"}, "method.options.rescale"),
        ({"mode": "filter", "constraint": "k_support"}, "does not fit mode 'filter'"),
        ({"radius": 1.0, "diameter": 2.0}, "radius or diameter"),
        ({"mode": "lowrank", "global_mode": True}, "global_mode"),
    ],
)
def test_invalid_options_name_the_key(options, culprit):
    """Each invalid option is refused before training with a message naming the offending key."""
    with pytest.raises(RecipeError, match=culprit.replace(".", r"\.")):
        _recipe("bad", options)


def test_weight_decay_is_refused():
    """SFW adds no weight decay: a recipe with one is refused, naming optimizer.weight_decay."""
    recipe = _recipe("wd", {}, optimizer={"lr": 0.1, "weight_decay": 5e-4})
    with pytest.raises(RecipeError, match=r"optimizer\.weight_decay"):
        SFWMethod(recipe.method_options(), recipe)


def test_delay_in_epochs_becomes_steps(tmp_path):
    """k_delay_epochs is converted with the run's steps per epoch: round(δ·steps_per_epoch)."""
    recipe = _recipe("delay", {"k_delay_epochs": 0.5}, train={**SMALL["train"], "max_steps": 1})
    trainer = Trainer(recipe, tmp_path / "run")
    trainer.fit()
    group = trainer.components.method.optimizer.param_groups[0]
    assert trainer.steps_per_epoch > 2
    assert group["k_delay_steps"] == round(0.5 * trainer.steps_per_epoch)


@pytest.mark.parametrize(("fraction", "epochs", "delay_epochs"), [(0.2, 3, 1), (0.7, 3, 2), (1.0, 3, 3)])
def test_delay_fraction_is_the_reference_count_of_epochs(tmp_path, fraction, epochs, delay_epochs):
    """k_delay_fraction δ delays k for max(1, int(δ·epochs)) epochs, as the paper's code counts them."""
    train = {**SMALL["train"], "epochs": epochs, "max_steps": 1}
    trainer = Trainer(_recipe("fraction", {"k_delay_fraction": fraction}, train=train), tmp_path / "run")
    trainer.fit()
    group = trainer.components.method.optimizer.param_groups[0]
    assert group["k_delay_steps"] == delay_epochs * trainer.steps_per_epoch


@pytest.mark.parametrize("k_switch", ["in_step", "epoch_end"])
def test_epoch_end_switch_happens_after_the_last_step_of_the_delay(tmp_path, k_switch):
    """With a one-epoch delay in a one-epoch run, ``epoch_end`` switches after the last step (the run ends
    inside the 2-support balls), while the in-step switch, due at the next step, never comes.
    """
    options = {"k": 2, "radius": 0.5, "initial_shift": False, "k_delay_fraction": 1.0, "k_switch": k_switch}
    trainer = Trainer(_recipe("switch", options), tmp_path / "run")
    results = trainer.fit()
    group = trainer.components.method.optimizer.param_groups[0]
    assert group["k_relaxed"] is (k_switch == "in_step")
    if k_switch == "epoch_end":
        assert results["max_gauge_ratio"] <= 1 + 1e-9
    else:
        assert results["max_gauge_ratio"] > 1.01


@pytest.mark.parametrize(
    "options",
    [
        {"k_switch": "epoch_end"},
        {"k_delay_epochs": 0.5, "k_switch": "epoch_end"},
        {"k_delay_epochs": 1, "k_delay_fraction": 0.5},
    ],
    ids=["no-delay", "part-epoch", "both"],
)
def test_delay_options_that_contradict_are_refused(options):
    """An epoch-end switch needs whole epochs of delay; a delay is given one way only."""
    with pytest.raises(RecipeError, match="k_delay"):
        _recipe("bad-delay", options)


def _built_optimizer(options, model_tree=None):
    """The SFW optimizer built for a fresh model of the recipe, the model's initial weights, the model."""
    comp = build_run(_recipe("built", options, model_tree))
    initial = [p.detach().clone() for p in comp.model.parameters()]
    return comp.method.build_optimizer(comp.model), initial, comp.model


def test_faithful_flags_reach_the_sets():
    """group_select, spectral_solver and k_min (Miao's floor on K) end up in the constraint sets."""
    group_opt, _, _ = _built_optimizer({"mode": "filter", "group_select": "kthvalue"}, LENET)
    assert group_opt.param_groups[0]["constraint"][0].config()["select"] == "kthvalue"
    spectral_opt, _, _ = _built_optimizer({"mode": "lowrank", "spectral_solver": "power"}, LENET)
    assert spectral_opt.param_groups[0]["constraint"][0].config()["solver"] == "power"
    miao_opt, _, model = _built_optimizer({"constraint": "k_sparse", "k": 0.05, "k_min": 10})
    for c, p in zip(miao_opt.param_groups[0]["constraint"], model.parameters(), strict=True):
        assert c.k == min(max(10, int(0.05 * p.numel())), p.numel())


def test_initial_shift_flag():
    """With a radius far below the initial norms, the default shifts the weights inside the sets while
    initial_shift=false (faithful) leaves the initialization untouched.
    """
    for shift in (True, False):
        _, initial, model = _built_optimizer({"radius": 0.01, "initial_shift": shift})
        moved = any(not torch.equal(a, p) for a, p in zip(initial, model.parameters(), strict=True))
        assert moved is shift


@pytest.mark.parametrize(
    "delay",
    [
        {"k_delay_epochs": 0.5},
        {"k_delay_epochs": 1, "k_switch": "epoch_end"},
        {"radius_draw": "reference", "radius_lookup": "by_shape", "initial_shift": False},
    ],
    ids=["in-step", "epoch-end", "reference-radii"],
)
def test_resume_equals_uninterrupted_run(tmp_path, train_until_killed, delay):
    """A run killed after its checkpoint at step 7 and resumed (across the delayed-k switch at step 9, or at
    the end of the first epoch; with the reference's radius draw, which must not re-randomize the resumed
    weights) ends with exactly the weights and optimizer state of the uninterrupted run.
    """
    recipe = _recipe(
        "resume",
        {"k": 0.2, **delay},
        train={**SMALL["train"], "epochs": 2, "checkpoint_every_steps": 7},
    )
    full = Trainer(recipe, tmp_path / "full")
    full.fit()

    train_until_killed(recipe, tmp_path / "split", step=10)
    assert CheckpointStore(tmp_path / "split" / "checkpoints").entries()[-1]["step"] == 7

    resumed = Trainer(recipe, tmp_path / "split")
    resumed.fit(resume=True)
    assert resumed.step == full.step
    expected = full.components.model.state_dict()
    for name, value in resumed.components.model.state_dict().items():
        assert torch.equal(value, expected[name]), name
    a, b = full.components.method.optimizer.state, resumed.components.method.optimizer.state
    for p, q in zip(full.components.model.parameters(), resumed.components.model.parameters(), strict=True):
        assert torch.equal(a[p]["momentum_buffer"], b[q]["momentum_buffer"])


def _conv_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Conv2d(4, 3, 1)).double()


def _penalty_method(cls, strength, tree_method):
    recipe = recipe_from_dict(
        {**SMALL, "name": "pen", "method": {"name": tree_method, "options": {"strength": strength}}}
    )
    return cls(recipe.method_options(), recipe)


def test_group_lasso_gradient_is_normalized_filters():
    """d/dW of λ·Σ_f ‖W_f‖₂ is λ·W_f/‖W_f‖₂ for every filter (float64)."""
    model = _conv_model()
    method = _penalty_method(GroupLassoTraining, 0.3, "group-lasso")
    method.penalty(model).backward()
    for conv in (model[0], model[2]):
        w = conv.weight.detach().flatten(1)
        expected = 0.3 * w / w.norm(dim=1, keepdim=True)
        torch.testing.assert_close(conv.weight.grad.flatten(1), expected, rtol=1e-10, atol=1e-12)


def test_nuclear_norm_gradient_is_uv():
    """d/dW of λ·‖mat(W)‖_* is λ·U·Vᵀ (float64, full-rank random weights)."""
    model = _conv_model()
    method = _penalty_method(NuclearNormTraining, 0.7, "nuclear-norm")
    method.penalty(model).backward()
    for conv in (model[0], model[2]):
        u, _, vh = torch.linalg.svd(conv.weight.detach().flatten(1), full_matrices=False)
        torch.testing.assert_close(conv.weight.grad.flatten(1), 0.7 * u @ vh, rtol=1e-8, atol=1e-10)


def test_prox_svd_shrinks_singular_values_by_strength_times_lr():
    """After a step, every conv's singular values are max(σ − λ·η_t, 0) of the pre-prox weights."""
    model = _conv_model()
    method = _penalty_method(ProximalSVDTraining, 2.0, "prox-svd")
    method.optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    before = [torch.linalg.svdvals(c.weight.detach().flatten(1)) for c in (model[0], model[2])]
    ctx = StepContext(step=0, epoch=0, total_steps=1, world=None)
    method.after_optimizer_step(model, ctx)
    for conv, s in zip((model[0], model[2]), before, strict=True):
        after = torch.linalg.svdvals(conv.weight.detach().flatten(1))
        torch.testing.assert_close(after, (s - 0.1).clamp_min(0), rtol=1e-9, atol=1e-10)


def test_compare_dense_and_sfw(tmp_path):
    """A tiny comparison of dense SGD and SFW k-support yields one row per recipe and level, SFW above
    chance at every level up to 90% sparsity.
    """
    import yaml

    paths = []
    for name, method, optimizer in [
        ("dense", {"name": "dense"}, {"lr": 0.1, "weight_decay": 5e-4}),
        ("sfw", {"name": "sfw", "options": {"n_draws": 5}}, {"lr": 0.1, "weight_decay": 0.0}),
    ]:
        tree = {**SMALL, "name": name, "method": method, "optimizer": optimizer}
        tree["train"] = {**SMALL["train"], "epochs": 2}
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(tree))
        paths.append(path)
    result = compare(paths, tmp_path / "cmp", seeds=[0])
    levels = {(r["recipe"], r["requested_level"]) for r in result["rows"]}
    assert levels == {(n, x) for n in ("dense", "sfw") for x in (0.0, 0.5, 0.9)}
    for row in result["rows"]:
        if row["recipe"] == "sfw":
            assert row["acc_compressed_no_ft"] > 0.3, row["requested_level"]

"""The tdlrt / dlrt / fixed-rank method plugins driven by the training engine."""

import pytest
import torch
from pydantic import ValidationError

from slimtrain.experiments.sweeping import sweep
from slimtrain.layers import MatrixFactorizedConv2d, MatrixFactorizedLinear, TuckerFactorizedConv2d
from slimtrain.lowrank import factorized_layers, lowrank_report
from slimtrain.train.checkpoint import CheckpointStore
from slimtrain.train.config import recipe_from_dict
from slimtrain.train.launch import train_multiprocess
from slimtrain.train.method import get_method_class
from slimtrain.train.trainer import Trainer


def _tree(name, method, options=None, **train):
    return {
        "name": name,
        "data": {"name": "digits", "val_fraction": 0.2},
        "model": {"name": "mlp", "kwargs": {"widths": [32, 32]}},
        "method": {"name": method, "options": options or {}},
        "optimizer": {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4},
        "train": {"epochs": 1, "batch_size": 64, "progress": False, "tensorboard": False, **train},
    }


def _ranks(trainer):
    return {n: layer.ranks for n, layer in factorized_layers(trainer.components.model).items()}


def test_methods_are_registered_with_strict_typed_options():
    """The three methods exist, choose their level during training through the named option, and their
    options reject unknown keys and out-of-range values.
    """
    for name, option in (("tdlrt", "tau"), ("dlrt", "tau"), ("fixed-rank", "rank_fraction")):
        cls = get_method_class(name)
        assert cls.levels_chosen == "during_training" and cls.level_option == option
        assert option in cls.Options.model_fields
        with pytest.raises(ValidationError):
            cls.Options.model_validate({"no_such_option": 1})
    with pytest.raises(ValidationError):
        get_method_class("tdlrt").Options.model_validate({"variant": "three_pass"})
    with pytest.raises(ValidationError):
        get_method_class("dlrt").Options.model_validate({"tau": -0.1})


@pytest.mark.parametrize(("variant", "passes"), [("two_pass", 2), ("parallel", 1), ("local", 1)])
def test_grad_evaluations_ranks_and_schedule(tmp_path, variant, passes):
    """A TDLRT run counts `passes` gradient evaluations per batch, reports ranks within [r_min, r_max] and
    both eval c.r. conventions, and the cosine schedule reaches the inner optimizer through rank changes.
    """
    tree = _tree("a", "tdlrt", {"tau": 0.3, "variant": variant}, max_steps=12)
    trainer = Trainer(recipe_from_dict(tree), tmp_path / variant)
    initial = _ranks(trainer)
    results = trainer.fit()
    assert results["grad_evals"] == passes * results["steps"] == passes * 12
    assert _ranks(trainer) != initial  # τ = 0.3 shrinks the ranks
    for name, layer in factorized_layers(trainer.components.model).items():
        assert isinstance(layer, MatrixFactorizedLinear)
        assert all(
            lo <= r <= hi for lo, r, hi in zip(layer.min_ranks, layer.ranks, layer.max_ranks, strict=True)
        )
        assert results["ranks_per_layer"][name] == list(layer.ranks)
    assert 0 < results["cr_percent_eval_factorized_only"] < 100
    assert "cr_percent_eval_dlrt_convention" in results and "cr_percent_train_tucker" in results
    method = trainer.components.method
    assert method.optimizer is method.integrator.optimizer
    (group,) = method.optimizer.param_groups
    assert group["initial_lr"] == 0.05
    assert group["lr"] == pytest.approx(0.05 * trainer.schedule.factor(11))


DLRT_NET = {"passes": 3, "aug_cap": "n", "state_transport": "none"}
# Plateau cutting at the ends of epochs 2 and 3 (every epoch after the first is bad).
PLATEAU = {"name": "plateau", "plateau": {"patience": 0, "threshold": 100.0, "threshold_mode": "abs"}}


@pytest.mark.parametrize(
    ("method", "options", "schedule"),
    [
        ("tdlrt", {}, None),
        ("tdlrt", {"variant": "local", "local_steps": 4}, None),
        ("tdlrt", {"variant": "local", "local_steps": 4, "cycle_phase": "epoch_offset"}, None),
        ("dlrt", DLRT_NET, None),
        ("dlrt", DLRT_NET, PLATEAU),
    ],
    ids=["two_pass", "local", "local_epoch_offset", "dlrt_three_pass", "dlrt_three_pass_plateau"],
)
def test_resume_reaches_the_same_weights_and_ranks(tmp_path, train_until_killed, method, options, schedule):
    """A TDLRT run killed mid-epoch and resumed from a checkpoint taken after the ranks changed (with local
    S-iterations: inside a cycle, which the checkpoint must carry; with three passes: the K and L optimizer
    state; with plateau: in epoch 2, before the cut at its end, which needs the saved best loss) ends with
    exactly the weights and ranks of the uninterrupted run.
    """
    epochs, killed, saved = (3, 35, 35) if schedule else (2, 10, 7)
    tree = _tree("r", method, {"tau": 0.3, **options}, epochs=epochs, checkpoint_every_steps=7)
    recipe = recipe_from_dict(tree if schedule is None else {**tree, "schedule": schedule})
    full = Trainer(recipe, tmp_path / "full")
    initial = _ranks(full)
    full.fit()

    train_until_killed(recipe, tmp_path / "split", step=killed)
    store = CheckpointStore(tmp_path / "split" / "checkpoints")
    assert store.entries()[-1]["step"] == saved
    saved = store.load_latest()[0]["method"]
    if options.get("variant") == "local":
        assert saved["cycle_ranks"] is not None
    saved_ranks = saved["cycle_ranks"] or saved["ranks"]
    assert {n: tuple(r) for n, r in saved_ranks.items()} != initial

    resumed = Trainer(recipe, tmp_path / "split")
    assert _ranks(resumed) == initial  # a fresh model: the checkpoint has to reshape it
    resumed.fit(resume=True)
    assert resumed.step == full.step
    assert _ranks(resumed) == _ranks(full)
    expected = full.components.model.state_dict()
    for name, value in resumed.components.model.state_dict().items():
        assert torch.equal(value, expected[name]), name
    assert resumed.components.method.integrator.step_count == full.components.method.integrator.step_count
    assert resumed.schedule.state_dict() == full.schedule.state_dict()
    if schedule:
        assert full.schedule.plateau.factor == pytest.approx(0.01)


def test_dlrt_three_passes_count_three_gradient_evaluations(tmp_path):
    """``dlrt`` with ``passes: 3`` runs the K, L and S passes per batch, and the schedule reaches the K and
    L parameters, which share the inner optimizer's single param group.
    """
    tree = _tree("k", "dlrt", {"tau": 0.3, "passes": 3}, max_steps=4)
    trainer = Trainer(recipe_from_dict(tree), tmp_path / "k")
    results = trainer.fit()
    assert results["grad_evals"] == 3 * results["steps"] == 12
    integrator = trainer.components.method.integrator
    (group,) = integrator.optimizer.param_groups
    kls = [p for pair in integrator.kls_parameters.values() for p in pair]
    assert len(kls) == 2 * len(integrator.layers) and all(any(p is q for q in group["params"]) for p in kls)
    assert group["lr"] == pytest.approx(0.05 * trainer.schedule.factor(3))


def test_loading_a_checkpoint_of_other_layers_is_refused(tmp_path):
    """Method state naming layers the model does not have raises an error naming both sets."""
    trainer = Trainer(recipe_from_dict(_tree("e", "tdlrt")), tmp_path / "e")
    with pytest.raises(ValueError, match="differ"):
        trainer.components.method.load_state_dict({"ranks": {"nope": [2, 2]}}, trainer.components.model)


def test_two_ranks_match_each_other_and_single_process(tmp_path):
    """Two DDP processes training a Tucker LeNet-5 (no BatchNorm, float64) end with identical ranks and
    weights, equal (1e-10) to one process trained on the combined batch, after ranks have changed.
    """
    tree = _tree("ddp", "tdlrt", {"tau": 0.2}, batch_size=16, dtype="float64", max_steps=12)
    tree["model"] = {"name": "lenet5"}
    states = train_multiprocess(recipe_from_dict(tree), tmp_path / "ddp", world_size=2)
    assert states[0]["method"]["ranks"] == states[1]["method"]["ranks"]
    for name, value in states[0]["model"].items():
        assert torch.equal(value, states[1]["model"][name]), name

    single = Trainer(
        recipe_from_dict({**tree, "train": {**tree["train"], "batch_size": 32}}), tmp_path / "one"
    )
    assert any(isinstance(m, TuckerFactorizedConv2d) for m in single.components.model.modules())
    initial = {name: list(r) for name, r in _ranks(single).items()}
    single.fit()
    assert states[0]["method"]["ranks"] != initial  # the ranks changed during the run
    assert states[0]["method"]["ranks"] == single.components.method.state_dict()["ranks"]
    for name, value in single.components.model.state_dict().items():
        torch.testing.assert_close(states[0]["model"][name], value, rtol=0, atol=1e-10)


def test_sweep_rows_carry_ranks_and_both_conventions(tmp_path):
    """Sweeping a finished DLRT run evaluates the trained model as it is (structure native) and its row
    holds the per-layer ranks and both eval compression-rate conventions; convs are matrix layers.
    """
    tree = _tree("s", "dlrt", {"tau": 0.2}, max_steps=6)
    tree["model"] = {"name": "lenet5"}
    trainer = Trainer(recipe_from_dict(tree), tmp_path / "s")
    assert any(isinstance(m, MatrixFactorizedConv2d) for m in trainer.components.model.modules())
    results = trainer.fit()
    (row,) = sweep(tmp_path / "s")
    assert row["structure"] == "native"
    assert row["ranks_per_layer"] == results["ranks_per_layer"]
    assert row["cr_percent_eval_dlrt_convention"] == results["cr_percent_eval_dlrt_convention"]
    assert row["cr_percent_eval_factorized_only"] == pytest.approx(results["cr_percent_eval_factorized_only"])
    assert row["acc_compressed_no_ft"] == pytest.approx(results["test_accuracy"])


def test_fixed_rank_trains_free_factors_at_fixed_ranks(tmp_path):
    """fixed-rank builds free (unconstrained) factors at the rank fraction, steps every factor with the
    plain optimizer once per batch, and never changes a rank.
    """
    trainer = Trainer(
        recipe_from_dict(_tree("f", "fixed-rank", {"rank_fraction": 0.25}, max_steps=5)), tmp_path / "f"
    )
    before = {n: p.detach().clone() for n, p in trainer.components.model.named_parameters()}
    initial = _ranks(trainer)
    assert initial == {"hidden.0": (8, 8), "hidden.1": (8, 8)}
    results = trainer.fit()
    assert results["grad_evals"] == results["steps"] == 5
    assert results["ranks_per_layer"] == {"hidden.0": [8, 8], "hidden.1": [8, 8]}
    assert "cr_percent_train_tucker" not in results  # no augmentation in vanilla training
    assert _ranks(trainer) == initial
    for name, param in trainer.components.model.named_parameters():
        assert param.requires_grad and not torch.equal(param, before[name]), name


@pytest.mark.parametrize("rank_policy", ["adaptive", "fixed"])
def test_reported_training_rate_uses_the_cap_the_integrator_augments_with(tmp_path, rank_policy):
    """Under rank_policy='fixed' the integrator augments up to n whatever aug_cap says; the run's reported
    Tucker training rate is computed at that cap (it used the recipe's aug_cap 'rmax' before).
    """
    tree = _tree("cap", "tdlrt", {"tau": 0.3, "rank_policy": rank_policy}, max_steps=2)
    trainer = Trainer(recipe_from_dict(tree), tmp_path / rank_policy)
    results = trainer.fit()
    cap = "n" if rank_policy == "fixed" else "rmax"
    assert trainer.components.method.integrator.augmentation_cap == cap
    model = trainer.components.model
    assert results["cr_percent_train_tucker"] == lowrank_report(model, aug_cap=cap)["cr_percent_train_tucker"]
    other = lowrank_report(model, aug_cap="rmax" if cap == "n" else "n")["cr_percent_train_tucker"]
    assert results["cr_percent_train_tucker"] != other

"""The training loop: resumable bit-exactly, stops cleanly on a non-finite loss, logs and checkpoints."""

import csv

import pytest
import torch

from slimtrain.errors import TrainingDiverged
from slimtrain.train.checkpoint import CheckpointStore
from slimtrain.train.config import recipe_from_dict
from slimtrain.train.trainer import Trainer

SMALL = {
    "data": {"name": "digits", "val_fraction": 0.2},
    "model": {"name": "mlp", "kwargs": {"widths": [32]}},
    "optimizer": {"lr": 0.05},
    "train": {"epochs": 2, "batch_size": 64, "progress": False, "checkpoint_every_steps": 7},
}


def _weights(trainer):
    return {k: v.clone() for k, v in trainer.components.model.state_dict().items()}


# Plateau: every epoch after the first is bad (abs threshold 100), so the rate is cut after each of them.
PLATEAU = {"name": "plateau", "plateau": {"patience": 0, "threshold": 100.0, "threshold_mode": "abs"}}


def _train_losses(run_dir):
    with (run_dir / "epochs.csv").open() as handle:
        return [row["train_loss"] for row in csv.DictReader(handle)]


@pytest.mark.parametrize(
    ("schedule", "epochs", "killed", "saved"),
    [(None, 2, 10, 7), (PLATEAU, 4, 45, 42)],
    ids=["cosine", "plateau"],
)
def test_resume_reaches_the_same_weights(tmp_path, train_until_killed, schedule, epochs, killed, saved):
    """A run killed mid-epoch and resumed from its last checkpoint ends with the uninterrupted weights and
    epoch losses (with plateau: killed in epoch 3, after a cut, whose state and loss sums are resumed).
    """
    tree = {**SMALL, "name": "a", "train": {**SMALL["train"], "epochs": epochs}}
    recipe = recipe_from_dict(tree if schedule is None else {**tree, "schedule": schedule})
    full = Trainer(recipe, tmp_path / "full")
    full.fit()

    train_until_killed(recipe, tmp_path / "split", step=killed)
    assert CheckpointStore(tmp_path / "split" / "checkpoints").entries()[-1]["step"] == saved

    resumed = Trainer(recipe, tmp_path / "split")
    resumed.fit(resume=True)
    assert resumed.step == full.step
    for name, value in _weights(full).items():
        assert torch.equal(value, _weights(resumed)[name]), name
    assert _train_losses(tmp_path / "split") == _train_losses(tmp_path / "full")
    assert resumed.schedule.state_dict() == full.schedule.state_dict()
    if schedule:
        assert full.schedule.plateau.factor == pytest.approx(1e-3)


def test_logs_and_results_are_written(tmp_path):
    """Training writes the resolved recipe, per-step and per-epoch CSV logs, TensorBoard events and a
    results file.
    """
    trainer = Trainer(recipe_from_dict({**SMALL, "name": "b"}), tmp_path / "b")
    results = trainer.fit()
    run = tmp_path / "b"
    assert (run / "recipe.yaml").exists() and (run / "results.json").exists()
    with (run / "epochs.csv").open() as handle:
        epochs = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in epochs] == [1, 2]
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert 0.0 <= results["test_accuracy"] <= 1.0
    assert results["grad_evals"] == results["steps"] == trainer.total_steps


def test_training_learns_digits(tmp_path):
    """A small MLP reaches well above chance (10%) on digits in a few epochs."""
    recipe = recipe_from_dict({**SMALL, "name": "c"}, ["train.epochs=5", "optimizer.lr=0.1"])
    assert Trainer(recipe, tmp_path / "c").fit()["val_accuracy"] > 0.8


def test_nan_loss_stops_and_keeps_checkpoint(tmp_path):
    """A huge learning rate makes the loss non-finite: training stops with a message naming the step, and
    the last good checkpoint still verifies and loads.
    """
    recipe = recipe_from_dict(
        {**SMALL, "name": "d"},
        ["optimizer.lr=1.0e12", "optimizer.momentum=0.0", "train.checkpoint_every_steps=1"],
    )
    trainer = Trainer(recipe, tmp_path / "d")
    with pytest.raises(TrainingDiverged, match=r"at step \d+ .*Last good checkpoint: .*step-"):
        trainer.fit()
    state, _ = CheckpointStore(tmp_path / "d" / "checkpoints").load_latest()
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_unwritable_output_fails_before_training(tmp_path):
    """An output directory that cannot be created is reported before any step runs."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    trainer = Trainer(recipe_from_dict({**SMALL, "name": "e"}), blocker / "run")
    with pytest.raises(OSError):
        trainer.fit()
    assert trainer.step == 0


def test_resume_refuses_a_run_of_another_recipe(tmp_path):
    """Resuming under a changed recipe would continue someone else's run; it stops and names the key."""
    from slimtrain.errors import RecipeError

    Trainer(
        recipe_from_dict({**SMALL, "name": "a", "train": {**SMALL["train"], "max_steps": 3}}), tmp_path
    ).fit()
    before = (tmp_path / "recipe.yaml").read_text()
    changed = recipe_from_dict({**SMALL, "name": "a", "optimizer": {"lr": 0.2}})
    with pytest.raises(RecipeError, match=r"optimizer\.lr: 0\.05 → 0\.2.*train\.max_steps: 3 → None"):
        Trainer(changed, tmp_path).fit(resume=True)
    assert (tmp_path / "recipe.yaml").read_text() == before


def test_resume_accepts_a_run_stored_before_an_option_existed(tmp_path):
    """A stored recipe without an option that now has a default (a run from before the option existed) is
    the same recipe, and resumes; a stored option with another value is not, and stops.
    """
    import yaml

    from slimtrain.errors import RecipeError

    method = {"name": "gmp", "options": {"target": 0.5}}
    recipe = recipe_from_dict(
        {**SMALL, "name": "a", "method": method, "train": {**SMALL["train"], "max_steps": 3}}
    )
    Trainer(recipe, tmp_path).fit()
    tree = yaml.safe_load((tmp_path / "recipe.yaml").read_text())
    assert tree["method"]["options"].pop("granularity") == "weights"
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(tree))
    Trainer(recipe, tmp_path).fit(resume=True)
    tree["method"]["options"]["end"] = 0.123
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(tree))
    with pytest.raises(RecipeError, match=r"method\.options.*'end': 0\.123"):
        Trainer(recipe, tmp_path).fit(resume=True)


def test_resume_accepts_a_run_stored_before_recipe_keys_existed(tmp_path):
    """A stored recipe without keys added since (with defaults that compute what it computed) resumes."""
    import yaml

    recipe = recipe_from_dict({**SMALL, "name": "a", "train": {**SMALL["train"], "max_steps": 3}})
    Trainer(recipe, tmp_path).fit()
    tree = yaml.safe_load((tmp_path / "recipe.yaml").read_text())
    for section, key in (("train", "precision"), ("train", "compile"), ("schedule", "plateau")):
        del tree[section][key]
    del tree["data"]["on_device"], tree["model"]["init_from"], tree["model"]["init_exclude"]
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(tree))
    Trainer(recipe, tmp_path).fit(resume=True)


@pytest.mark.parametrize("text", ["[1, 2", "- a list\n"], ids=["broken", "not-a-mapping"])
def test_resume_names_an_unreadable_stored_recipe(tmp_path, text):
    """A damaged ``recipe.yaml`` in the run directory stops a resume with its path, not a traceback."""
    from slimtrain.errors import RecipeError

    (tmp_path / "recipe.yaml").write_text(text)
    with pytest.raises(RecipeError, match=r"recipe\.yaml"):
        Trainer(recipe_from_dict({**SMALL, "name": "a"}), tmp_path).fit(resume=True)
    assert (tmp_path / "recipe.yaml").read_text() == text

"""The run identity: which recipe keys it covers, and the trainer's refusal to train over a finished run."""

import json

import pytest

from slimtrain.errors import BadInputError
from slimtrain.train.config import recipe_from_dict
from slimtrain.train.identity import (
    PRESENTATION_KEYS,
    computed_keys,
    is_finished,
    recipe_digest,
    run_identity,
)
from slimtrain.train.trainer import Trainer

SMALL = {
    "data": {"name": "digits", "val_fraction": 0.2},
    "model": {"name": "mlp", "kwargs": {"widths": [16]}},
    "train": {"epochs": 1, "batch_size": 64, "max_steps": 3, "progress": False, "tensorboard": False},
}


@pytest.mark.parametrize(
    "override",
    [
        "name=other",
        "output_dir=elsewhere",
        "train.progress=true",
        "train.tensorboard=true",
        "train.log_every_steps=1",
        "train.checkpoint_every_steps=2",
        "train.device=cpu",
        "train.threads=1",
        "evaluation.bn_recalibration=true",
        "evaluation.levels=[0.5]",
        "evaluation.structure=filter",
    ],
)
def test_presentation_and_evaluation_keys_leave_the_digest(override):
    """Where a run writes, how it logs, where it runs and how it is evaluated do not change its digest."""
    assert recipe_digest(recipe_from_dict(SMALL, [override])) == recipe_digest(recipe_from_dict(SMALL))


@pytest.mark.parametrize(
    "override",
    [
        "seed=1",
        "optimizer.lr=0.01",
        "train.dtype=float64",
        "train.batch_size=32",
        "train.max_steps=4",
        "data.val_fraction=0.1",
        "model.kwargs.widths=[8]",
        "method.name=gmp",
    ],
)
def test_computed_keys_change_the_digest(override):
    """Every key that changes what is trained (precision included) changes the digest."""
    assert recipe_digest(recipe_from_dict(SMALL, [override])) != recipe_digest(recipe_from_dict(SMALL))


def test_method_options_are_resolved():
    """Options given explicitly at their default are the same computation as options left out."""
    explicit = recipe_from_dict({**SMALL, "method": {"name": "gmp", "options": {"granularity": "weights"}}})
    implicit = recipe_from_dict({**SMALL, "method": {"name": "gmp"}})
    assert recipe_digest(explicit) == recipe_digest(implicit)
    keys = computed_keys(implicit)
    assert not any(k == p or k.startswith(p + ".") for k in keys for p in PRESENTATION_KEYS)


def test_fit_refuses_a_finished_run_and_overwrite_replaces_it(tmp_path):
    """`Trainer.fit` into a finished run raises BadInputError naming the directory; ``overwrite=True``
    trains again after removing the old run's derived outputs; ``resume=True`` keeps the run.
    """
    recipe = recipe_from_dict({**SMALL, "name": "a"})
    first = Trainer(recipe, tmp_path).fit()
    assert is_finished(tmp_path)
    assert first["run_identity"] == run_identity(tmp_path).digest
    (tmp_path / "sweep-unstructured.json").write_text("{}")
    with pytest.raises(BadInputError, match=str(tmp_path)):
        Trainer(recipe_from_dict({**SMALL, "name": "a"}, ["optimizer.lr=0.01"]), tmp_path).fit()
    assert (tmp_path / "sweep-unstructured.json").exists()
    assert Trainer(recipe, tmp_path).fit(resume=True)["run_identity"] == first["run_identity"]
    again = Trainer(recipe_from_dict({**SMALL, "name": "a"}, ["optimizer.lr=0.01"]), tmp_path)
    second = again.fit(overwrite=True)
    assert second["run_identity"] != first["run_identity"]
    assert not (tmp_path / "sweep-unstructured.json").exists()
    assert json.loads((tmp_path / "results.json").read_text())["run_identity"] == second["run_identity"]


def test_a_fresh_start_drops_the_event_files_of_an_unfinished_run(tmp_path):
    """Starting an unfinished run over (no --resume) does not pile its TensorBoard event files up."""
    stale = tmp_path / "tensorboard" / "events.out.tfevents.0.old"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    recipe = recipe_from_dict({**SMALL, "name": "a", "train": {**SMALL["train"], "tensorboard": True}})
    Trainer(recipe, tmp_path).fit()
    assert not stale.exists() and list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


class _Tree:
    """A stand-in recipe with keys recipes may gain (``model.init_from``, ``train.precision``)."""

    def __init__(self, tree):
        self.tree = tree

    def model_dump(self, mode="json"):
        return self.tree


def test_init_from_weights_and_precision_are_part_of_the_digest(tmp_path):
    """With ``model.init_from`` set, the weights file's SHA-256 is in the digest (another file with the same
    path changes it); a ``train.precision`` key counts like any computed key.
    """
    weights = tmp_path / "init.pt"
    weights.write_bytes(b"first")
    tree = {"model": {"name": "mlp", "init_from": str(weights)}, "train": {"precision": "fp32"}}
    first = recipe_digest(_Tree(tree))
    assert computed_keys(_Tree(tree))["model.init_from.sha256"] is not None
    weights.write_bytes(b"second")
    assert recipe_digest(_Tree(tree)) != first
    bf16 = {**tree, "train": {"precision": "bf16"}}
    assert recipe_digest(_Tree(bf16)) != recipe_digest(_Tree(tree))
    weights.unlink()
    assert computed_keys(_Tree(tree))["model.init_from.sha256"] is None

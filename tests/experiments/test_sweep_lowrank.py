"""Sweeping a low-rank run: the latency measurement must not change what the sweep reports."""

import pytest

from slimtrain.experiments.sweeping import load_trained, sweep, sweep_path
from slimtrain.lowrank import factorized_layers
from slimtrain.train.config import recipe_from_dict
from slimtrain.train.trainer import Trainer

TREE = {
    "name": "tdlrt-small",
    "data": {"name": "digits", "val_fraction": 0.2},
    "model": {"name": "mlp", "kwargs": {"widths": [32, 32]}},
    "method": {"name": "tdlrt", "options": {"tau": 0.3}},
    "optimizer": {"lr": 0.05, "momentum": 0.9},
    "train": {"epochs": 1, "batch_size": 64, "max_steps": 8, "progress": False, "tensorboard": False},
}


@pytest.fixture(scope="module")
def lowrank_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "tdlrt"
    Trainer(recipe_from_dict(TREE), run_dir).fit()
    return run_dir


def test_latency_sweep_reports_the_ratio_and_ranks_of_the_plain_sweep(lowrank_run):
    """`sweep --latency` compares the trained factorized model with its dense reconstruction without
    densifying the trained model itself: the compression ratio and the ranks are those of the plain sweep.
    """
    (plain,) = sweep(lowrank_run)
    sweep_path(lowrank_run, "native").unlink()
    (timed,) = sweep(lowrank_run, latency=True, latency_batch_sizes=(1,))
    assert plain["structure"] == timed["structure"] == "native"
    assert plain["compression_ratio_all"] > 1.0
    assert timed["compression_ratio_all"] == plain["compression_ratio_all"]
    assert timed["params_stored_all"] == plain["params_stored_all"]
    assert timed["ranks_per_layer"] == plain["ranks_per_layer"]
    assert timed["latency_model_state"] == "exported" and timed["latency_ms_b1"] > 0


def test_dense_reference_is_a_new_dense_model(lowrank_run):
    """The low-rank methods' dense reference replaces the factorized layers in a copy, with the same
    outputs; the trained model keeps its factorized layers.
    """
    comp = load_trained(lowrank_run)
    layers = factorized_layers(comp.model)
    assert layers
    dense = comp.method.dense_reference(comp.model)
    assert dense is not comp.model and not factorized_layers(dense)
    assert factorized_layers(comp.model).keys() == layers.keys()
    assert all(a is b for a, b in zip(factorized_layers(comp.model).values(), layers.values(), strict=True))
    inputs = comp.splits.test.inputs[:16].to(dtype=comp.dtype)
    assert (dense(inputs) - comp.model(inputs)).abs().max() < 1e-4

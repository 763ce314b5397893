"""NN-BCD and its baselines as engine methods: training through the trainer, sweep rows, options errors."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from slimtrain.algebra.tt import tt_storage
from slimtrain.bcd import FullBatchMemoryError, tt_storage_fractions
from slimtrain.errors import RecipeError
from slimtrain.experiments.sweeping import sweep
from slimtrain.layers import TTLinear
from slimtrain.methods.tt_layout import default_tt_modes
from slimtrain.train.checkpoint import CheckpointStore
from slimtrain.train.config import recipe_from_dict
from slimtrain.train.distributed import World
from slimtrain.train.trainer import Trainer, build_run

# digits: 64 input features; hidden 16, 16; 10 classes. Default modes: 16×64 → (4,)^5, 16×16 → (4,)^4.
SHAPES = [(16, 64), (16, 16), (10, 16)]
MODES = {0: (4,) * 5, 1: (4,) * 4}


def _recipe(method: str, options: dict, *overrides: str, epochs: int = 3):
    tree = {
        "name": method,
        "data": {"name": "digits", "val_fraction": 0.15},
        "model": {"name": "mlp", "kwargs": {"widths": [16, 16]}},
        "method": {"name": method, "options": options},
        "optimizer": {"name": "sgd", "lr": 0.02, "momentum": 0.9},
        "train": {"epochs": epochs, "batch_size": 128, "progress": False, "tensorboard": False},
        "evaluation": {"structure": "native", "levels": [0.0]},
    }
    return recipe_from_dict(tree, list(overrides))


def test_nnbcd_trains_through_the_engine_and_sweep_storage_equals_hand_count(tmp_path):
    """An ``nnbcd`` run is gradient-free (0 gradient evaluations, one step per epoch), its objective never
    rises, and the sweep row's storage fraction and stored count equal the hand count of the TT cores
    (CR₁: the model has no biases, the classifier is dense).
    """
    results = Trainer(_recipe("nnbcd", {"rank": 4}), tmp_path).fit()
    assert results["grad_evals"] == 0 and results["steps"] == results["sweeps"] == 3
    assert results["objective_rises"] == 0 and results["tt_rank"] == 4
    (row,) = sweep(tmp_path)
    hand = tt_storage_fractions(SHAPES, MODES, 4)
    stored = tt_storage(MODES[0], 4) + tt_storage(MODES[1], 4) + 10 * 16
    assert row["params_stored_all"] == stored
    assert math.isclose(row["storage_fraction_all"], hand.all, rel_tol=1e-12)
    assert math.isclose(results["storage_fraction_compressed"], hand.compressed, rel_tol=1e-12)
    assert row["acc_compressed_no_ft"] == row["acc_dense"]  # the trained network is the compressed one


def test_nnbcd_storage_reduction_picks_the_largest_fitting_rank(tmp_path):
    """The level ``storage_reduction`` selects the largest uniform rank r with CR₂(r) ≤ 1 − level."""
    method = build_run(_recipe("nnbcd", {"storage_reduction": 0.8})).method
    fractions = [
        tt_storage_fractions(SHAPES, MODES, r).compressed
        for r in (method.layout.rank, method.layout.rank + 1)
    ]
    assert fractions[0] <= 0.2 < fractions[1]


def test_nnbcd_resume_continues_exactly(tmp_path, train_until_killed):
    """A run killed after its first sweep and resumed ends with the weights of an uninterrupted run
    (the checkpoint holds every solver block).
    """
    recipe = _recipe("nnbcd", {"rank": 4})
    full = Trainer(recipe, tmp_path / "full")
    full.fit()
    train_until_killed(recipe, tmp_path / "split", step=2)
    assert CheckpointStore(tmp_path / "split" / "checkpoints").entries()[-1]["step"] == 2
    resumed = Trainer(recipe, tmp_path / "split")
    resumed.fit(resume=True)
    expected = full.components.model.state_dict()
    for name, value in resumed.components.model.state_dict().items():
        assert torch.equal(value, expected[name]), name
    assert len(resumed.components.method.solver.history) == 3


def test_nnbcd_prune_keeps_the_exact_count_per_hidden_layer(tmp_path):
    """``nnbcd-prune`` at sparsity s zeroes exactly ⌊s·n⌋ weights of each hidden layer (NN-BCD's H_s) and
    leaves the classifier dense.
    """
    Trainer(_recipe("nnbcd-prune", {"sparsity": 0.75}, epochs=2), tmp_path).fit()
    (row,) = sweep(tmp_path)
    per_layer = row["sparsity_per_layer"]
    assert per_layer["hidden.0.weight"] == math.floor(0.75 * 16 * 64) / (16 * 64)
    assert per_layer["hidden.1.weight"] == math.floor(0.75 * 16 * 16) / (16 * 16)
    assert per_layer["classifier.weight"] == 0.0


def test_tt_sgd_trains_and_its_compression_ratio_matches(tmp_path):
    """``tt-sgd`` trains TT cores by gradients (one gradient evaluation per step, finite loss) and the sweep
    row's compression ratio equals the hand count (cores + biases + dense classifier over the dense MLP).
    """
    recipe = _recipe("tt-sgd", {"rank": 4}, epochs=2)
    trainer = Trainer(recipe, tmp_path)
    results = trainer.fit()
    assert results["grad_evals"] == results["steps"] > 0
    assert all(isinstance(layer, TTLinear) for layer in trainer.components.model.hidden)
    (row,) = sweep(tmp_path)
    dense = 16 * 64 + 16 + 16 * 16 + 16 + 10 * 16 + 10
    stored = tt_storage(MODES[0], 4) + 16 + tt_storage(MODES[1], 4) + 16 + 10 * 16 + 10
    assert row["params_stored_all"] == stored
    assert math.isclose(row["compression_ratio_all"], dense / stored, rel_tol=1e-12)


def test_dense_per_layer_pruning_with_dense_output(tmp_path):
    """``dense`` with ``unstructured: per_layer`` prunes ⌊s·n⌋ entries of every hidden layer and, with
    ``keep_output_dense``, none of the classifier.
    """
    options = {"unstructured": "per_layer", "keep_output_dense": True}
    Trainer(_recipe("dense", options, "evaluation.structure=unstructured", epochs=1), tmp_path).fit()
    (row,) = sweep(tmp_path, levels=[0.9])
    per_layer = row["sparsity_per_layer"]
    assert per_layer["hidden.0.weight"] == math.floor(0.9 * 1024) / 1024
    assert per_layer["hidden.1.weight"] == math.floor(0.9 * 256) / 256
    assert per_layer["classifier.weight"] == 0.0


@pytest.mark.parametrize(
    ("method", "options", "culprit"),
    [
        ("nnbcd", {"rank": 4, "storage_reduction": 0.5}, "'rank' and 'storage_reduction'"),
        ("nnbcd", {"storage_reduction": None}, "'rank' and 'storage_reduction'"),
        ("nnbcd", {"rank": 4, "taus": 1.0}, "method.options.taus"),
        ("nnbcd", {"rank": 0}, "method.options.rank"),
        ("nnbcd-prune", {"sparsity": 1.0}, "method.options.sparsity"),
        ("nnbcd-prune", {"gamma": -1.0}, "method.options.gamma"),
        ("tt-sgd", {"storage_reduction": 1.5}, "method.options.storage_reduction"),
        ("dense", {"keep_output_dense": True}, "'keep_output_dense'"),
    ],
)
def test_invalid_options_name_the_key(method, options, culprit):
    """Invalid method options are refused before training with a message naming the key."""
    with pytest.raises(RecipeError, match=culprit):
        _recipe(method, options)


@pytest.mark.parametrize(
    ("options", "culprit"),
    [
        ({"rank": 4, "modes": {"hidden.0": [4, 4, 4]}}, "'modes.hidden.0'"),
        ({"rank": 4, "modes": {"hidden.7": [4] * 5}}, "hidden.7"),
        ({"storage_reduction": 0.999}, "'storage_reduction'"),
    ],
)
def test_layout_errors_name_the_key(options, culprit):
    """TT layouts that cannot be built name the option (and layer) at fault."""
    with pytest.raises(ValueError, match=culprit):
        build_run(_recipe("tt-sgd", options))


def test_non_mlp_model_is_refused():
    """NN-BCD needs the registry's MLP; another model is refused naming the method and the model class."""
    recipe = _recipe("nnbcd", {"rank": 4}, "model.name=lenet5", "model.kwargs={}")
    with pytest.raises(ValueError, match=r"'nnbcd'.*LeNet5"):
        build_run(recipe)


@given(st.integers(1, 600), st.integers(1, 600))
def test_default_modes_factor_the_weight(rows, cols):
    """Default TT modes multiply to rows·cols, ascend, and are primes or 4."""
    modes = default_tt_modes(rows, cols)
    assert math.prod(modes) == rows * cols
    assert list(modes) == sorted(modes)
    assert all(m == 4 or all(m % p for p in range(2, m)) for m in modes)


def test_full_batch_method_gets_the_whole_split_once_per_epoch_and_refuses_several_processes(tmp_path):
    """The trainer gives a full-batch method one step per epoch holding every training sample in order,
    and refuses to run it in more than one process.
    """
    trainer = Trainer(_recipe("nnbcd-prune", {"sparsity": 0.5}, epochs=1), tmp_path / "one")
    seen = []
    original = trainer.components.method.training_step

    def spy(model, inputs, targets, ctx):
        seen.append(targets.clone())
        return original(model, inputs, targets, ctx)

    trainer.components.method.training_step = spy
    trainer.fit()
    (targets,) = seen
    assert torch.equal(targets, trainer.components.splits.train.targets)
    with pytest.raises(ValueError, match="single process"):
        Trainer(_recipe("nnbcd", {"rank": 4}), tmp_path / "two", world=World(rank=0, world_size=2))


def test_memory_check_refuses_before_any_sweep(tmp_path):
    """With a budget too small for the full batch, the first step raises FullBatchMemoryError naming the
    largest N that fits, before any sweep has run.
    """
    trainer = Trainer(_recipe("nnbcd", {"rank": 4, "memory_budget_gib": 1e-5}), tmp_path)
    with pytest.raises(FullBatchMemoryError, match="largest N that fits"):
        trainer.fit()
    assert trainer.components.method.solver.history == []

"""Two-process CPU data parallelism: ranks stay identical and equal one process on the combined batch."""

import torch

from slimtrain.data import ArrayDataset, BatchLoader
from slimtrain.train.config import recipe_from_dict
from slimtrain.train.launch import train_multiprocess
from slimtrain.train.trainer import Trainer

TREE = {
    "name": "ddp",
    "data": {"name": "digits", "val_fraction": 0.2},
    "model": {"name": "mlp", "kwargs": {"widths": [24]}},
    "optimizer": {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4},
    # Cut at the ends of epochs 2 and 3 (18 steps each): the ranks must agree on the epoch loss.
    "schedule": {"name": "plateau", "plateau": {"patience": 0, "threshold": 100.0, "threshold_mode": "abs"}},
    "train": {"epochs": 4, "batch_size": 32, "dtype": "float64", "progress": False, "max_steps": 60},
}


def test_two_ranks_match_each_other_and_single_process(tmp_path):
    """After 60 steps (with two plateau cuts taken from the epoch loss), both ranks hold bitwise-identical
    weights, and these equal (float64, 1e-10) the weights of a single process trained with the combined
    batch (2 × 32).
    """
    states = train_multiprocess(recipe_from_dict(TREE), tmp_path / "ddp", world_size=2)
    for name, value in states[0]["model"].items():
        assert torch.equal(value, states[1]["model"][name]), name

    single_tree = {**TREE, "train": {**TREE["train"], "batch_size": 64}}
    single = Trainer(recipe_from_dict(single_tree), tmp_path / "single")
    single.fit()
    for name, value in single.components.model.state_dict().items():
        torch.testing.assert_close(states[0]["model"][name], value, rtol=0, atol=1e-10)


def test_rank_shards_are_disjoint_and_cover_the_global_batch():
    """With the trainer's loader settings, the two ranks' batches never share a sample and together form
    exactly the single-process batch of twice the size.
    """
    n = 200
    ids = ArrayDataset(
        torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1), torch.zeros(n, dtype=torch.long)
    )
    ranks = [BatchLoader(ids, 16, shuffle=True, seed=3, rank=r, world_size=2) for r in range(2)]
    single = BatchLoader(ids, 32, shuffle=True, seed=3)
    for loader in (*ranks, single):
        loader.set_epoch(1)
    for (a, _), (b, _), (both, _) in zip(*ranks, single, strict=True):
        a, b = set(a.flatten().tolist()), set(b.flatten().tolist())
        assert not a & b
        assert a | b == set(both.flatten().tolist())

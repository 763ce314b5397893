"""The divergence check's finiteness test: exact on every tensor, finite values of any size included."""

import pytest
import torch

from slimtrain.train.config import recipe_from_dict
from slimtrain.train.method import finite_flags
from slimtrain.train.trainer import Trainer

NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_flags_are_exactly_isfinite_all(dtype):
    big = torch.finfo(dtype).max
    tensors = [
        torch.full((64,), big, dtype=dtype),  # finite, but its L2 norm overflows
        torch.tensor([1.0, NAN], dtype=dtype),
        torch.tensor([-INF], dtype=dtype),
        torch.zeros(0, dtype=dtype),
        torch.tensor([[-big, 0.0], [3.0, big]], dtype=dtype),
    ]
    assert finite_flags(tensors).tolist() == [bool(torch.isfinite(t).all()) for t in tensors]


def test_huge_finite_weights_do_not_stop_training(tmp_path):
    """A bias of 1e19 (finite; the loss too) is not reported as divergence."""
    tree = {
        "name": "huge",
        "data": {"name": "digits", "val_fraction": 0.2},
        "model": {"name": "mlp", "kwargs": {"widths": [16]}},
        "train": {"epochs": 1, "batch_size": 64, "max_steps": 4, "progress": False, "tensorboard": False},
    }
    trainer = Trainer(recipe_from_dict(tree), tmp_path / "run")
    with torch.no_grad():
        trainer.components.model.classifier.bias.fill_(1e19)
    results = trainer.fit()
    assert results["steps"] == 4

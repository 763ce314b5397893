"""Functions that run a user's model in eval mode give every sub-module its own training flag back.

A training model with one BatchNorm frozen in eval mode (a common fine-tuning set-up) must come back exactly
so: ``model.train(was_training)`` would unfreeze it, and its running statistics would then move.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from slimtrain import compress, metrics
from slimtrain.data.dataset import ArrayDataset
from slimtrain.train.evaluate import evaluate

X = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4),
    )  # fmt: skip
    model.train()
    model[1].eval()  # frozen statistics, inside a training model
    return model


def _plan(model: nn.Module) -> None:
    compress.filter_pruning_plan(model, 0.5, X)


RUNS: dict[str, Callable[[nn.Module], object]] = {
    "count_macs": lambda m: metrics.count_macs(m, X),
    "summarize": lambda m: metrics.summarize(m, X),
    "measure_latency": lambda m: metrics.measure_latency(m, X, warmup=0, iters=1, min_time_s=0.0),
    "evaluate": lambda m: evaluate(m, ArrayDataset(X, torch.zeros(4, dtype=torch.long)), batch_size=4),
    "filter_pruning_plan": _plan,
    "remove_channels": lambda m: compress.remove_channels(m, compress.filter_pruning_plan(m, 0.5, X), X),
    "check_same_outputs": lambda m: compress.check_same_outputs(m, m, X),
}


@pytest.mark.parametrize("run", RUNS, ids=list(RUNS))
def test_every_sub_module_keeps_its_training_flag(run):
    """After the call, each sub-module's ``training`` is what it was before."""
    model = _model()
    before = [m.training for m in model.modules()]
    RUNS[run](model)
    assert [m.training for m in model.modules()] == before

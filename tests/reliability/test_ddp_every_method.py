"""Data parallelism for every registered method: two gloo ranks stay bitwise identical (weights, masks,
ranks) and follow the single-process run with the same global batch.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from slimtrain.train.config import recipe_from_dict
from slimtrain.train.launch import train_multiprocess
from slimtrain.train.trainer import Trainer

from .tiny_runs import assert_same_state, methods, tiny_tree, warm_up

# float64 parameters of N ranks at batch B and one process at batch N·B differ only by the summation
# order of the gradient average (a few ulps per step); data-dependent decisions (masks, ranks) must agree.
PARAMETER_ATOL = 1e-9
# With BatchNorm each rank normalises its own half batch (no synchronised BatchNorm on CPU), so the
# trajectory is close to, not equal to, the single-process one: after 5 steps of the tiny ResNet the
# largest gaps measured are about 2.6e-2 (a running variance) and 2e-2 (a weight).
BATCHNORM_ATOL = 5e-2


@pytest.fixture(autouse=True, scope="module")
def _warm(tmp_path_factory):
    """Pay the lazy imports once here rather than in every forked child."""
    warm_up(tmp_path_factory.mktemp("warm-up"))


def _float_leaves(state, prefix="state"):
    if isinstance(state, torch.Tensor):
        yield prefix, state
    elif isinstance(state, dict):
        for key, value in state.items():
            yield from _float_leaves(value, f"{prefix}.{key}")
    elif isinstance(state, list | tuple):
        for index, value in enumerate(state):
            yield from _float_leaves(value, f"{prefix}[{index}]")


@pytest.mark.parametrize("method", methods())
def test_two_ranks_identical_and_equal_to_one_process(method, tmp_path):
    """After a few steps of 2-process CPU DDP (gloo, 24 samples per rank), both ranks hold bitwise-identical
    parameters, buffers and method state (masks, ranks); and these match one process trained on the
    48-sample global batch: integer and boolean state (ranks, masks, counters) exactly, floating point
    within ``PARAMETER_ATOL`` (float64), or ``BATCHNORM_ATOL`` for models with BatchNorm.
    """
    tree = tiny_tree(method, train={"batch_size": 24, "max_steps": 5, "checkpoint_every_steps": 0})
    ranks = train_multiprocess(recipe_from_dict(tree), tmp_path / "ddp", world_size=2, start_method="fork")
    assert_same_state(ranks[1]["model"], ranks[0]["model"], "model")
    assert_same_state(ranks[1]["method"], ranks[0]["method"], "method")

    single_tree = tiny_tree(method, train={"batch_size": 48, "max_steps": 5, "checkpoint_every_steps": 0})
    single = Trainer(recipe_from_dict(single_tree), tmp_path / "single")
    single.fit()
    expected = {
        "model": single.components.model.state_dict(),
        "method": single.components.method.state_dict(),
    }
    actual = {"model": ranks[0]["model"], "method": ranks[0]["method"]}
    model = single.components.model
    has_batchnorm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    atol = BATCHNORM_ATOL if has_batchnorm else PARAMETER_ATOL
    got = dict(_float_leaves(actual))
    want = dict(_float_leaves(expected))
    assert set(got) == set(want)
    for name, value in want.items():
        assert got[name].shape == value.shape, name
        if value.is_floating_point():
            torch.testing.assert_close(
                got[name], value, rtol=0, atol=atol, msg=lambda m, name=name: f"{name}: {m}"
            )
        else:
            assert torch.equal(got[name], value), name
    assert ranks[0]["results"]["steps"] == single.step

"""Data-parallel TDLRT through ``grad_reducer``: two ranks match one process on the combined batch.

Ranks are simulated by threads here; the real two-process gloo run of TDLRT through the engine is
``tests/methods/test_tdlrt_methods.py``.
"""

import threading

import torch
import torch.nn.functional as F
from torch import nn

from slimtrain.lowrank import TDLRT, convert_to_lowrank, factorized_layers

F64 = torch.float64
STEPS = 3


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 6, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(6, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 3 * 3, 12),
        nn.ReLU(),
        nn.Linear(12, 3),
    ).to(F64)
    convert_to_lowrank(model, init="from_weights")
    return model


def _data(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(step)
    return torch.randn(16, 2, 6, 6, generator=gen, dtype=F64), torch.randint(0, 3, (16,), generator=gen)


def _train(model: nn.Module, rank: int, world: int, reducer) -> tuple[dict, dict]:
    integrator = TDLRT(
        model, lambda p: torch.optim.SGD(p, lr=0.2, momentum=0.9), tau=0.4, grad_reducer=reducer
    )
    for step in range(STEPS):
        x, y = _data(step)
        part = slice(rank * 16 // world, (rank + 1) * 16 // world)

        def closure(x=x[part], y=y[part]):
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            return loss

        integrator.step(closure)
    return integrator.ranks(), model.state_dict()


def _check_against_single_process(results: list[dict]) -> None:
    expected_ranks, expected_state = _train(_model(), 0, 1, None)
    initial = {name: layer.ranks for name, layer in factorized_layers(_model()).items()}
    assert expected_ranks != initial  # ranks changed, so parameters were re-shaped during training
    for result in results:
        assert result["ranks"] == expected_ranks
        for key, value in expected_state.items():
            assert (result["state"][key] - value).abs().max() < 1e-10, key


class _ThreadAllReduce:
    """All-reduce (mean) between threads, standing in for torch.distributed in a fast test."""

    def __init__(self, world: int) -> None:
        self.world = world
        self.barrier = threading.Barrier(world)
        self.slots: list[list[torch.Tensor] | None] = [None] * world
        self.mean: list[torch.Tensor] = []

    def for_rank(self, rank: int):
        def reduce(grads: list[torch.Tensor]) -> None:
            self.slots[rank] = grads
            self.barrier.wait()
            if rank == 0:
                self.mean = [sum(parts) / self.world for parts in zip(*self.slots, strict=True)]
            self.barrier.wait()
            for g, m in zip(grads, self.mean, strict=True):
                g.copy_(m)
            self.barrier.wait()

        return reduce


def test_two_thread_ranks_match_single_process_on_combined_batch():
    """Both ranks end with the single-process ranks and weights (1e-10): gradients are really averaged."""
    world = 2
    reducer = _ThreadAllReduce(world)
    results: list[dict] = [{} for _ in range(world)]

    # Built here, one after the other: _model() seeds the global RNG, which the threads would share.
    models = [_model() for _ in range(world)]

    def run(rank: int) -> None:
        ranks, state = _train(models[rank], rank, world, reducer.for_rank(rank))
        results[rank] = {"ranks": ranks, "state": state}

    threads = [threading.Thread(target=run, args=(r,)) for r in range(world)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    _check_against_single_process(results)

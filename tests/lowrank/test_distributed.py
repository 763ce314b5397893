"""Data-parallel TDLRT through ``grad_reducer``: two ranks match one process on the combined batch.

The thread-based test always runs; the real two-process gloo test takes tens of seconds (process start-up)
and runs when ``SLIMTRAIN_DISTRIBUTED_TESTS=1``.
"""

import os
import threading

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
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


def _train(rank: int, world: int, reducer) -> tuple[dict, dict]:
    model = _model()
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


def _all_reduce_mean(grads: list[torch.Tensor]) -> None:
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        ranks, state = _train(rank, world, _all_reduce_mean)
        torch.save({"ranks": ranks, "state": state}, f"{out_dir}/{rank}.pt")
    finally:
        dist.destroy_process_group()


def _check_against_single_process(results: list[dict]) -> None:
    expected_ranks, expected_state = _train(0, 1, None)
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

    def run(rank: int) -> None:
        ranks, state = _train(rank, world, reducer.for_rank(rank))
        results[rank] = {"ranks": ranks, "state": state}

    threads = [threading.Thread(target=run, args=(r,)) for r in range(world)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    _check_against_single_process(results)


@pytest.mark.skipif(
    os.environ.get("SLIMTRAIN_DISTRIBUTED_TESTS") != "1", reason="set SLIMTRAIN_DISTRIBUTED_TESTS=1"
)
def test_two_gloo_ranks_match_single_process_on_combined_batch(tmp_path):
    """Two gloo processes with an all-reduce grad_reducer end with the single-process ranks and weights."""
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    _check_against_single_process([torch.load(tmp_path / f"{r}.pt", weights_only=True) for r in range(2)])

"""Run a recipe on several local processes without ``torchrun`` (CPU/gloo), e.g. for tests and notebooks.

Production runs use ``torchrun --nproc-per-node N -m slimtrain train RECIPE``; this helper spawns the same
ranks with ``torch.multiprocessing`` and returns each rank's final weights, so that callers can check that
every rank ends identical.
"""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from slimtrain.train.config import Recipe, recipe_from_dict


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rank_main(
    rank: int, world_size: int, port: int, tree: dict[str, Any], run_dir: str, out_dir: str
) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    from slimtrain.train.trainer import Trainer

    try:
        trainer = Trainer(recipe_from_dict(tree), run_dir)
        results = trainer.fit()
        torch.save(
            {
                "model": trainer.components.model.state_dict(),
                "method": trainer.components.method.state_dict(),
                "results": results,
            },
            Path(out_dir) / f"rank{rank}.pt",
        )
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def train_multiprocess(
    recipe: Recipe, run_dir: str | Path, world_size: int = 2, start_method: str = "spawn"
) -> list[dict[str, Any]]:
    """Train ``recipe`` on ``world_size`` local CPU processes (gloo) and return each rank's final state.

    Args:
        recipe: the recipe every rank trains.
        run_dir: the run directory (rank 0 writes it).
        world_size: number of processes.
        start_method: ``spawn`` (safe everywhere) or ``fork`` (POSIX; no interpreter start-up per rank, for
            tests; only from a process that has not initialised CUDA or a process group).

    Returns:
        Per rank: ``{"model": state_dict, "method": method state, "results": final metrics}``.
    """
    tree = recipe.model_dump(mode="json")
    with tempfile.TemporaryDirectory() as out_dir:
        mp.start_processes(
            _rank_main,
            args=(world_size, _free_port(), tree, str(run_dir), out_dir),
            nprocs=world_size,
            start_method=start_method,
        )
        return [torch.load(Path(out_dir) / f"rank{rank}.pt", weights_only=True) for rank in range(world_size)]

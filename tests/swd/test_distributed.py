"""Under data parallelism every rank selects the same weights (masks come from the synchronised weights).

Gradients are averaged explicitly, as slimtrain's trainer does (a ``DistributedDataParallel`` wrapper torn
down with its process group can deadlock in gloo's destructor).
"""

import os
import socket
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from slimtrain.swd import MagnitudeSelection, SelectiveWeightDecay
from slimtrain.train.distributed import World

from .swd_models import SmallCNN


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = SmallCNN()
    world_group = World(rank=rank, world_size=world)
    swd = SelectiveWeightDecay(MagnitudeSelection(900), weight_decay=5e-4, total_steps=3, a_max=10.0)
    torch.manual_seed(1 + rank)  # each rank sees different data
    for _ in range(3):
        model.zero_grad()
        model(torch.randn(4, 1, 8, 8)).square().mean().backward()
        world_group.average_gradients(list(model.parameters()))
        swd.apply_(model)
        with torch.no_grad():  # plain SGD; torch.optim's first step is slow to import in a fresh process
            for p in model.parameters():
                p.add_(p.grad, alpha=-0.1)
        swd.step()
    masks = torch.cat([s.removed.flatten() for s in swd.selection.select(model)])
    torch.save(masks, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_ranks_select_the_same_weights() -> None:
    """Two gloo ranks training on different data end with identical selected sets after SWD steps."""
    with tempfile.TemporaryDirectory() as out_dir:
        # fork: the children inherit the imported torch instead of importing it again
        mp.start_processes(_rank, args=(2, _free_port(), out_dir), nprocs=2, join=True, start_method="fork")
        masks = [torch.load(os.path.join(out_dir, f"rank{r}.pt")) for r in range(2)]
    assert masks[0].any()
    assert torch.equal(masks[0], masks[1])

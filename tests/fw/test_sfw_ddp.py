"""SFW under data parallelism: every rank computes the same update (spec sfw.md §6).

Gradients are averaged explicitly, as slimtrain's trainer does (a ``DistributedDataParallel`` wrapper torn
down with its process group can deadlock in gloo's destructor).
"""

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from slimtrain.fw import SFW, build_constraints
from slimtrain.train.distributed import World


def _worker(rank: int, world: int, init_file: str, out_file: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.manual_seed(0)  # same initial weights on every rank
    model = nn.Sequential(nn.Conv2d(2, 6, 3), nn.BatchNorm2d(6), nn.Flatten(), nn.Linear(24, 3))
    # Radii, k and the power iteration's start are seeded, so all ranks build identical sets.
    opt = SFW(build_constraints(model, "lowrank", k=0.5, n_draws=3, spectral_solver="power"), lr=0.3)
    world_group = World(rank=rank, world_size=world)
    gen = torch.Generator().manual_seed(100 + rank)  # different data per rank
    for _ in range(3):
        opt.zero_grad()
        x, y = torch.randn(4, 2, 4, 4, generator=gen), torch.randint(0, 3, (4,), generator=gen)
        nn.functional.cross_entropy(model(x), y).backward()
        world_group.average_gradients(list(model.parameters()))
        opt.step()
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    gathered = [torch.empty_like(flat) for _ in range(world)]
    dist.all_gather(gathered, flat)
    if rank == 0:
        torch.save(torch.stack(gathered), out_file)
    dist.destroy_process_group()


def test_ranks_agree_after_sfw_steps(tmp_path):
    """After 3 DDP steps on different data per rank, all ranks hold bit-identical parameters."""
    out = tmp_path / "params.pt"
    # fork: the children inherit the imported modules instead of importing torch again.
    mp.start_processes(
        _worker, args=(2, str(tmp_path / "init"), str(out)), nprocs=2, join=True, start_method="fork"
    )
    params = torch.load(out, weights_only=True)
    assert torch.equal(params[0], params[1])

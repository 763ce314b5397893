"""The process group a run executes in: plain ``torch.distributed``, launched by ``torchrun``.

Gradients are averaged explicitly (:meth:`World.average_gradients`) instead of through a
``DistributedDataParallel`` wrapper, because methods run several passes per batch and some re-create
parameters when ranks change; an explicit all-reduce over the current parameter list stays correct in both
cases.
"""

from __future__ import annotations

import datetime
import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from slimtrain.errors import PeerLostError

TIMEOUT_ENV = "SLIMTRAIN_DDP_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 600.0

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _collective(function: Callable[_P, _R]) -> Callable[_P, _R]:
    """Turn a backend failure inside a :class:`World` collective into a :class:`PeerLostError`."""

    @functools.wraps(function)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return function(*args, **kwargs)
        except RuntimeError as err:  # gloo and nccl report lost peers and timeouts as RuntimeError
            world = args[0]
            raise PeerLostError(
                f"process {world.rank} of {world.world_size}: collective '{function.__name__}' failed; "
                "another process died or did not answer within the timeout "
                f"({TIMEOUT_ENV}, default {DEFAULT_TIMEOUT_S:g} s). Stopping this process. "
                f"Backend error: {err}"
            ) from err

    return wrapper


@dataclass(frozen=True)
class World:
    """Rank and size of the process group (a single process has rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Whether this process writes files and shows progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether more than one process takes part."""
        return self.world_size > 1

    @_collective
    def average_gradients(self, parameters: list[nn.Parameter]) -> None:
        """Replace each parameter's gradient by its mean over all processes (missing gradients count as 0)."""
        if not self.distributed or not parameters:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
        # One flat buffer per dtype: a single collective instead of one per tensor.
        for dtype in sorted({g.dtype for g in grads}, key=str):
            group = [(p, g) for p, g in zip(parameters, grads, strict=True) if g.dtype == dtype]
            flat = torch.cat([g.reshape(-1) for _, g in group])
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            flat /= self.world_size
            offset = 0
            for p, g in group:
                n = g.numel()
                p.grad = flat[offset : offset + n].view_as(g).clone()
                offset += n

    @_collective
    def average_batchnorm_statistics(self, module: nn.Module) -> None:
        """Replace BatchNorm running means and variances by their mean over all processes.

        Each process normalises its own shard, so without this the running statistics (buffers, which
        gradient averaging does not touch) drift apart and the ranks end with different models.
        """
        if not self.distributed:
            return
        stats = [
            buffer
            for m in module.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm)
            for buffer in (m.running_mean, m.running_var)
            if buffer is not None
        ]
        for dtype in sorted({b.dtype for b in stats}, key=str):
            group = [b for b in stats if b.dtype == dtype]
            flat = torch.cat([b.reshape(-1) for b in group])
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            flat /= self.world_size
            offset = 0
            with torch.no_grad():
                for b in group:
                    b.copy_(flat[offset : offset + b.numel()].view_as(b))
                    offset += b.numel()

    @_collective
    def all_reduce_mean(self, tensor: torch.Tensor) -> torch.Tensor:
        """Mean of ``tensor`` over all processes (returned as a new tensor)."""
        if not self.distributed:
            return tensor.clone()
        out = tensor.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out / self.world_size

    @_collective
    def broadcast_module(self, module: nn.Module) -> None:
        """Copy rank 0's parameters and buffers to every process."""
        if not self.distributed:
            return
        with torch.no_grad():
            for tensor in list(module.parameters()) + list(module.buffers()):
                dist.broadcast(tensor.data, src=0)

    @_collective
    def barrier(self) -> None:
        """Wait for every process."""
        if self.distributed:
            dist.barrier()


def collective_timeout_s() -> float:
    """The collective timeout in seconds: ``$SLIMTRAIN_DDP_TIMEOUT_S`` if set, else 600.

    Raises:
        ValueError: the variable is not a positive number.
    """
    raw = os.environ.get(TIMEOUT_ENV)
    if raw is None:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise ValueError(f"{TIMEOUT_ENV} must be a positive number of seconds, got {raw!r}")
    return value


def init_world(device: torch.device, timeout_s: float | None = None) -> World:
    """Join the process group described by ``torchrun``'s environment (``RANK``, ``WORLD_SIZE``, ...).

    A single process (no ``WORLD_SIZE`` or ``WORLD_SIZE=1``) gets a trivial world. The collective timeout
    (``timeout_s``, default :func:`collective_timeout_s`) makes a run whose peer died or hangs end with a
    :class:`PeerLostError` instead of waiting forever.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return World()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        timeout = timeout_s if timeout_s is not None else collective_timeout_s()
        dist.init_process_group(
            backend, rank=rank, world_size=world_size, timeout=datetime.timedelta(seconds=timeout)
        )
    return World(rank=rank, world_size=world_size, local_rank=local_rank)


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """Turn a recipe's device setting into a ``torch.device`` (``auto`` picks CUDA when available)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("the recipe asks for device 'cuda' but no CUDA device is available")
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")

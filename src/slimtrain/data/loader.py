"""Deterministic, DDP-sharded mini-batches over an in-memory dataset."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from slimtrain.data.dataset import ArrayDataset, BatchTransform
from slimtrain.data.seeding import derive_generator

__all__ = ["BatchLoader"]


class BatchLoader:
    """Iterate over ``(inputs, targets)`` batches of an :class:`ArrayDataset`, sharded across ranks.

    Order and sharding: each epoch draws one global permutation of the dataset from ``(seed, epoch)``
    (the identity when ``shuffle`` is false). Global batch ``t`` is ``perm[t*B*W : (t+1)*B*W]`` with
    ``B = batch_size`` (per rank) and ``W = world_size``; rank ``r`` yields the ``r``-th contiguous chunk of
    size ``B`` of it. The union of all ranks' batches at step ``t`` is therefore exactly the batch a single
    process with ``batch_size = B*W`` gets at step ``t``, and every rank sees the same number of batches.

    The last global batch, when it has fewer than ``B*W`` samples, is dropped if ``drop_last``; otherwise it
    is truncated to a multiple of ``W`` and split into ``W`` equal chunks (so ranks stay in lock-step; up to
    ``W - 1`` samples of that epoch's permutation are skipped, different ones each epoch). With ``W == 1``
    nothing is truncated.

    Batches are gathered by indexing the dataset's tensors, on the dataset's device. ``transform`` (e.g.
    :attr:`DatasetSplits.augment`) is applied to the inputs of each batch with a generator derived from
    ``(seed, epoch, step, rank)``.

    Call :meth:`set_epoch` before each epoch, as with ``DistributedSampler``: without it every epoch repeats
    the order of epoch 0.

    Args:
        dataset: the data; may be empty (then there are no batches).
        batch_size: samples per batch on this rank.
        shuffle: draw a fresh permutation each epoch; otherwise keep dataset order.
        seed: base seed for the permutation and the transform.
        drop_last: drop the final incomplete global batch instead of truncating it.
        transform: batch transform applied to the inputs, or ``None``.
        rank: index of this process in ``[0, world_size)``.
        world_size: number of processes sharing the data.
    """

    def __init__(
        self,
        dataset: ArrayDataset,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        drop_last: bool = False,
        transform: BatchTransform | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"BatchLoader batch_size must be >= 1, got {batch_size}")
        if world_size < 1:
            raise ValueError(f"BatchLoader world_size must be >= 1, got {world_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"BatchLoader rank must be in [0, {world_size}), got {rank}")
        if seed < 0:
            raise ValueError(f"BatchLoader seed must be >= 0, got {seed}")
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.transform = transform
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose permutation and transform randomness the next iteration uses."""
        if epoch < 0:
            raise ValueError(f"BatchLoader epoch must be >= 0, got {epoch}")
        self.epoch = epoch

    @property
    def global_batch_size(self) -> int:
        """Samples per step over all ranks, ``batch_size * world_size``."""
        return self.batch_size * self.world_size

    def _chunk_sizes(self) -> tuple[int, int]:
        """Number of full global batches and the per-rank size of the final partial one (0 if none)."""
        full, rest = divmod(len(self.dataset), self.global_batch_size)
        if self.drop_last:
            return full, 0
        return full, rest // self.world_size

    def __len__(self) -> int:
        full, last = self._chunk_sizes()
        return full + (1 if last > 0 else 0)

    def permutation(self) -> Tensor:
        """The global order of sample indices for the current epoch (CPU, int64)."""
        n = len(self.dataset)
        if not self.shuffle:
            return torch.arange(n)
        return torch.randperm(n, generator=derive_generator(self.seed, self.epoch))

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        full, last = self._chunk_sizes()
        inputs, targets = self.dataset.inputs, self.dataset.targets
        perm = self.permutation().to(inputs.device)
        global_b = self.global_batch_size
        sizes = [self.batch_size] * full + ([last] if last > 0 else [])
        for step, size in enumerate(sizes):
            start = step * global_b + self.rank * size
            index = perm[start : start + size]
            # index_select copies whole rows; it is several times faster than advanced indexing on CPU.
            x, y = inputs.index_select(0, index), targets.index_select(0, index)
            if self.transform is not None:
                x = self.transform(x, derive_generator(self.seed, self.epoch, step, self.rank))
            yield x, y

    def __repr__(self) -> str:
        return (
            f"BatchLoader(n={len(self.dataset)}, batch_size={self.batch_size}, shuffle={self.shuffle}, "
            f"rank={self.rank}, world_size={self.world_size}, epoch={self.epoch})"
        )

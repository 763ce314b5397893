"""Deterministic, DDP-sharded mini-batches over an in-memory dataset."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import torch
from torch import Tensor

from slimtrain.data.dataset import ArrayDataset, BatchTransform
from slimtrain.data.seeding import derive_generator
from slimtrain.data.transfer import indexed_device, to_device

__all__ = ["BatchLoader", "OnDevice", "fits_on_device"]

#: Where a loader with a ``device`` keeps the data: ``True`` (copied to the device once), ``False`` (on the
#: host, each batch copied through pinned memory) or ``"auto"`` (:func:`fits_on_device` decides).
OnDevice = bool | Literal["auto"]

# Share of the device's free memory a dataset may take when ``on_device="auto"``: the rest is for the model,
# its activations and the optimizer.
_AUTO_SHARE = 0.25


def fits_on_device(dataset: ArrayDataset, device: torch.device | str) -> bool:
    """Whether ``on_device="auto"`` keeps ``dataset`` on ``device``.

    True when the dataset is already there, or ``device`` is a CUDA device and the dataset's tensors take at
    most a quarter of its free memory (CIFAR-10's 50,000 float32 images take 0.6 GB; MNIST's 60,000 take
    0.2 GB). Other devices get batches from the host.
    """
    device = indexed_device(device)
    if dataset.inputs.device == device:
        return True
    if device.type != "cuda":
        return False
    free, _ = torch.cuda.mem_get_info(device)
    size = sum(t.numel() * t.element_size() for t in (dataset.inputs, dataset.targets))
    return size <= _AUTO_SHARE * free


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

    Placement: without ``device``, batches are gathered by indexing the dataset's tensors, on the dataset's
    device. With ``device``, batches are yielded there: if the data is kept on the device (``on_device``),
    it is copied there once, at the first iteration, and batches are gathered and augmented there;
    otherwise each batch is gathered on the host into pinned memory and copied without blocking, then
    augmented on the device. Either way a batch holds the same values as without ``device``: the order and
    the augmentation's random draws come from the same CPU generators, and gathering, cropping and flipping
    copy values exactly.

    ``transform`` (e.g. :attr:`DatasetSplits.augment`) is applied to the inputs of each batch with a
    generator derived from ``(seed, epoch, step, rank)``.

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
        device: where batches are yielded; ``None`` keeps them on the dataset's device.
        on_device: with ``device``, keep the whole dataset there (``True``), gather on the host (``False``),
            or decide by size (``"auto"``, :func:`fits_on_device`).
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
        device: torch.device | str | None = None,
        on_device: OnDevice = "auto",
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"BatchLoader batch_size must be >= 1, got {batch_size}")
        if world_size < 1:
            raise ValueError(f"BatchLoader world_size must be >= 1, got {world_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"BatchLoader rank must be in [0, {world_size}), got {rank}")
        if seed < 0:
            raise ValueError(f"BatchLoader seed must be >= 0, got {seed}")
        if on_device not in (True, False, "auto"):
            raise ValueError(f"BatchLoader on_device must be True, False or 'auto', got {on_device!r}")
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.transform = transform
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.device = None if device is None else indexed_device(device)
        self.on_device = on_device
        self._keep: bool | None = None  # keeps_data_on_device, once decided
        self._resident: ArrayDataset | None = None  # the dataset's copy on `device`, made at first use

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

    @property
    def keeps_data_on_device(self) -> bool:
        """Whether batches are gathered from a copy of the dataset on :attr:`device` (see ``on_device``).

        Decided once, at the first call: the copy then takes memory that ``"auto"`` would otherwise count.
        """
        if self._keep is None:
            if self.device is None:
                self._keep = False
            elif self.on_device == "auto":
                self._keep = fits_on_device(self.dataset, self.device)
            else:
                self._keep = self.on_device
        return self._keep

    def _source(self) -> tuple[ArrayDataset, torch.device | None]:
        """The dataset batches are gathered from, and the device they go to afterwards (``None``: none)."""
        if not self.keeps_data_on_device:
            return self.dataset, self.device
        if self._resident is None:
            self._resident = self.dataset.to(self.device)
        return self._resident, None

    def _gather(self, tensor: Tensor, index: Tensor, destination: torch.device | None) -> Tensor:
        """Rows ``index`` of ``tensor``; straight into pinned memory when they are copied to a GPU next."""
        # index_select copies whole rows; it is several times faster than advanced indexing on CPU.
        if destination is None or destination.type != "cuda" or tensor.device.type != "cpu":
            return tensor.index_select(0, index)
        out = torch.empty((index.numel(), *tensor.shape[1:]), dtype=tensor.dtype, pin_memory=True)
        return torch.index_select(tensor, 0, index, out=out)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        full, last = self._chunk_sizes()
        source, destination = self._source()
        inputs, targets = source.inputs, source.targets
        perm = to_device(self.permutation(), inputs.device)
        global_b = self.global_batch_size
        sizes = [self.batch_size] * full + ([last] if last > 0 else [])
        for step, size in enumerate(sizes):
            start = step * global_b + self.rank * size
            index = perm[start : start + size]
            x, y = self._gather(inputs, index, destination), self._gather(targets, index, destination)
            if destination is not None:
                x, y = to_device(x, destination), to_device(y, destination)
            if self.transform is not None:
                x = self.transform(x, derive_generator(self.seed, self.epoch, step, self.rank))
            yield x, y

    def __repr__(self) -> str:
        return (
            f"BatchLoader(n={len(self.dataset)}, batch_size={self.batch_size}, shuffle={self.shuffle}, "
            f"rank={self.rank}, world_size={self.world_size}, epoch={self.epoch}, device={self.device})"
        )

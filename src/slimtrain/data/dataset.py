"""In-memory datasets: :class:`ArrayDataset` and the :class:`DatasetSplits` bundle."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["ArrayDataset", "BatchTransform", "DatasetSplits"]

#: A train-time batch transform: ``transform(inputs, generator) -> inputs`` on an ``N×C×H×W`` batch.
BatchTransform = Callable[[Tensor, torch.Generator], Tensor]


class ArrayDataset:
    """A labelled image dataset held as two tensors.

    Args:
        inputs: ``N×C×H×W`` float32 images (normalized by whoever built them).
        targets: ``N`` int64 class indices.
        num_classes: if given, every target must lie in ``[0, num_classes)``.
        allow_empty: accept ``N == 0`` (used for an empty validation split).

    Raises:
        ValueError: wrong rank or dtype, mismatched lengths, negative or out-of-range labels, non-finite
            inputs, or an empty dataset when ``allow_empty`` is false.
    """

    def __init__(
        self, inputs: Tensor, targets: Tensor, *, num_classes: int | None = None, allow_empty: bool = False
    ) -> None:
        if not isinstance(inputs, Tensor) or not isinstance(targets, Tensor):
            raise TypeError(
                f"ArrayDataset needs tensors, got inputs={type(inputs).__name__}, "
                f"targets={type(targets).__name__}"
            )
        if inputs.dim() != 4:
            raise ValueError(f"ArrayDataset inputs must be N×C×H×W, got shape {tuple(inputs.shape)}")
        if inputs.dtype != torch.float32:
            raise ValueError(f"ArrayDataset inputs must be float32, got {inputs.dtype}")
        if targets.dim() != 1:
            raise ValueError(f"ArrayDataset targets must be 1-D (N,), got shape {tuple(targets.shape)}")
        if targets.dtype != torch.int64:
            raise ValueError(f"ArrayDataset targets must be int64, got {targets.dtype}")
        if inputs.shape[0] != targets.shape[0]:
            raise ValueError(
                f"ArrayDataset has {inputs.shape[0]} inputs but {targets.shape[0]} targets; they must match"
            )
        if inputs.shape[0] == 0 and not allow_empty:
            raise ValueError("ArrayDataset is empty (N == 0); pass allow_empty=True if that is intended")
        if targets.numel() > 0:
            low, high = int(targets.min()), int(targets.max())
            if low < 0:
                raise ValueError(f"ArrayDataset targets must be >= 0, found label {low}")
            if num_classes is not None and high >= num_classes:
                raise ValueError(f"ArrayDataset label {high} is out of range for num_classes={num_classes}")
        if inputs.numel() > 0 and not bool(torch.isfinite(inputs).all()):
            bad = int((~torch.isfinite(inputs)).flatten(1).any(1).nonzero()[0])
            raise ValueError(f"ArrayDataset inputs contain NaN or infinite values (first at sample {bad})")
        self.inputs = inputs
        self.targets = targets

    def __len__(self) -> int:
        return self.targets.shape[0]

    def __getitem__(self, index: int | slice | Tensor) -> tuple[Tensor, Tensor]:
        return self.inputs[index], self.targets[index]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one sample."""
        _, c, h, w = self.inputs.shape
        return (c, h, w)

    def subset(self, indices: Tensor) -> ArrayDataset:
        """Return the samples at ``indices`` (in that order) as a new dataset; may be empty."""
        return ArrayDataset(self.inputs[indices], self.targets[indices], allow_empty=True)

    def to(self, device: torch.device | str) -> ArrayDataset:
        """Return a copy on ``device`` (the tensors themselves if already there)."""
        return ArrayDataset(self.inputs.to(device), self.targets.to(device), allow_empty=True)

    def __repr__(self) -> str:
        return f"ArrayDataset(n={len(self)}, input_shape={self.input_shape}, device={self.inputs.device})"


@dataclass(frozen=True)
class DatasetSplits:
    """A dataset ready for training: normalized train/val/test splits and what a model needs to know.

    Attributes:
        name: registry name of the dataset.
        train: training split (validation samples removed).
        val: validation split carved from the original training set; empty when ``val_fraction == 0``.
        test: the dataset's own test set, never touched by the split.
        num_classes: number of classes; every label lies in ``[0, num_classes)``.
        input_shape: ``(C, H, W)`` of one sample.
        mean: per-channel mean used to normalize the stored inputs (in ``[0, 1]`` pixel units).
        std: per-channel standard deviation used to normalize the stored inputs.
        augment: train-time batch transform (``transform(inputs, generator)``) or ``None``.
    """

    name: str
    train: ArrayDataset
    val: ArrayDataset
    test: ArrayDataset
    num_classes: int
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: BatchTransform | None = None

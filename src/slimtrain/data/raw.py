"""What a dataset builder returns: unnormalized train/test tensors and the dataset's conventions."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

__all__ = ["RawSplits"]


@dataclass(frozen=True)
class RawSplits:
    """A dataset as read from disk, before the validation split and normalization.

    Attributes:
        train_inputs: ``N×C×H×W`` float32, unnormalized (pixels in ``[0, 1]`` for image data).
        train_targets: ``N`` int64 labels in ``[0, num_classes)``.
        test_inputs: the dataset's test images, same layout.
        test_targets: the dataset's test labels.
        num_classes: number of classes.
        mean: standard per-channel mean, or ``None`` to compute it from the training split.
        std: standard per-channel standard deviation, or ``None`` to compute it from the training split.
        crop_padding: padding of the standard random-crop augmentation (0: no crop).
        flip: whether the standard augmentation includes random horizontal flips.
    """

    train_inputs: Tensor
    train_targets: Tensor
    test_inputs: Tensor
    test_targets: Tensor
    num_classes: int
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    crop_padding: int = 0
    flip: bool = False

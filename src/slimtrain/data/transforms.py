"""Batched augmentation and normalization in plain torch.

Every transform is called as ``transform(inputs, generator)`` on an ``N×C×H×W`` batch and draws all of its
randomness from ``generator`` (a CPU ``torch.Generator``), so a run is reproducible from its seeds. Random
parameters are drawn per sample and applied with tensor indexing, never a Python loop over samples. The
batch may live on any device: the draws are made on the host and copied to it without blocking
(:func:`slimtrain.data.transfer.to_device`), so a batch is augmented identically on a CPU and on a GPU.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from slimtrain.data.dataset import BatchTransform
from slimtrain.data.transfer import to_device

__all__ = ["Compose", "Normalize", "RandomCrop", "RandomHorizontalFlip", "standard_augmentation"]


def _channel_values(values: float | Sequence[float], like: Tensor, what: str) -> Tensor:
    """``1×C×1×1`` tensor of a scalar or one value per channel, with ``like``'s device and dtype."""
    channels = like.shape[1]
    vals = torch.as_tensor(values, dtype=torch.float32).flatten()
    if vals.numel() == 1:
        vals = vals.expand(channels)
    if vals.numel() != channels:
        raise ValueError(f"{what} has {vals.numel()} values but the batch has {channels} channels")
    return to_device(vals.reshape(1, channels, 1, 1).to(like.dtype), like.device)


def _check_batch(inputs: Tensor, who: str) -> None:
    if inputs.dim() != 4:
        raise ValueError(f"{who} expects an N×C×H×W batch, got shape {tuple(inputs.shape)}")


class RandomCrop:
    """Pad each image by ``padding`` pixels on every side, then crop it back to its size at a random offset.

    The offset is drawn independently per sample, uniformly in ``[0, 2 * padding]`` along each axis.

    Args:
        padding: pixels of padding per side; 0 makes the transform the identity.
        fill: value of the padding, a scalar or one per channel. Inputs are stored normalized, so the
            standard recipe passes ``-mean / std``: the padding is then black in pixel space, as with
            padding before normalization.
    """

    def __init__(self, padding: int, fill: float | Sequence[float] = 0.0) -> None:
        if padding < 0:
            raise ValueError(f"RandomCrop padding must be >= 0, got {padding}")
        self.padding = padding
        self.fill = fill

    def __call__(self, inputs: Tensor, generator: torch.Generator) -> Tensor:
        """Return the randomly cropped batch (a new tensor unless ``padding == 0``)."""
        _check_batch(inputs, "RandomCrop")
        if self.padding == 0 or inputs.shape[0] == 0:
            return inputs
        n, c, h, w = inputs.shape
        p = self.padding
        padded = inputs.new_empty(n, c, h + 2 * p, w + 2 * p)
        padded.copy_(_channel_values(self.fill, inputs, "RandomCrop fill").expand_as(padded))
        padded[:, :, p : p + h, p : p + w] = inputs
        offsets = to_device(torch.randint(0, 2 * p + 1, (2, n), generator=generator), inputs.device)
        # All h×w windows as a strided view (n, c, 2p+1, 2p+1, h, w), no copy; then pick one per sample.
        windows = padded.unfold(2, h, 1).unfold(3, w, 1)
        return windows[torch.arange(n, device=inputs.device), :, offsets[0], offsets[1]]

    def __repr__(self) -> str:
        return f"RandomCrop(padding={self.padding}, fill={self.fill})"


class RandomHorizontalFlip:
    """Mirror each image left-right with probability ``p``, drawn independently per sample."""

    def __init__(self, p: float = 0.5) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomHorizontalFlip probability must be in [0, 1], got {p}")
        self.p = p

    def __call__(self, inputs: Tensor, generator: torch.Generator) -> Tensor:
        """Return the batch with a random subset of its images mirrored."""
        _check_batch(inputs, "RandomHorizontalFlip")
        flip = to_device(torch.rand(inputs.shape[0], generator=generator) < self.p, inputs.device)
        return torch.where(flip[:, None, None, None], inputs.flip(3), inputs)

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class Normalize:
    """Map pixels to ``(x - mean) / std`` per channel; deterministic (the generator is ignored)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        if len(mean) != len(std):
            raise ValueError(f"Normalize got {len(mean)} means but {len(std)} standard deviations")
        if any(s <= 0 for s in std):
            raise ValueError(f"Normalize standard deviations must be > 0, got {tuple(std)}")
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    def __call__(self, inputs: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Return the normalized batch."""
        _check_batch(inputs, "Normalize")
        mean = _channel_values(self.mean, inputs, "Normalize mean")
        std = _channel_values(self.std, inputs, "Normalize std")
        return (inputs - mean) / std

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean}, std={self.std})"


class Compose:
    """Apply transforms in order, all drawing from the same generator."""

    def __init__(self, transforms: Sequence[BatchTransform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, inputs: Tensor, generator: torch.Generator) -> Tensor:
        """Return the batch after every transform."""
        for transform in self.transforms:
            inputs = transform(inputs, generator)
        return inputs

    def __repr__(self) -> str:
        return f"Compose({self.transforms})"


def standard_augmentation(
    crop_padding: int, flip: bool, mean: Sequence[float], std: Sequence[float]
) -> BatchTransform | None:
    """The usual train-time recipe for inputs already normalized with ``mean``/``std``.

    Args:
        crop_padding: padding of the random crop (0 for no crop); padding is black in pixel space.
        flip: add a random horizontal flip with probability 0.5.
        mean: per-channel mean the stored inputs were normalized with.
        std: per-channel standard deviation the stored inputs were normalized with.

    Returns:
        The composed transform, or ``None`` when the recipe is empty.
    """
    transforms: list[BatchTransform] = []
    if crop_padding > 0:
        fill = [-m / s for m, s in zip(mean, std, strict=True)]
        transforms.append(RandomCrop(crop_padding, fill=fill))
    if flip:
        transforms.append(RandomHorizontalFlip())
    if not transforms:
        return None
    return transforms[0] if len(transforms) == 1 else Compose(transforms)

"""Synthetic classification data for tests and speed benchmarks."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor
from torch.nn import functional as F

from slimtrain.data.raw import RawSplits

__all__ = ["load_synthetic"]


def _samples(prototypes: Tensor, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``n`` samples with balanced, shuffled labels: the class prototype plus isotropic Gaussian noise."""
    k = prototypes.shape[0]
    targets = (torch.arange(n) % k)[torch.randperm(n, generator=generator)]
    noise = torch.randn((n, *prototypes.shape[1:]), generator=generator)
    return noise.add_(prototypes[targets]), targets


def load_synthetic(
    data_dir: Path | None,
    num_samples: int = 1024,
    input_shape: Sequence[int] = (1, 16, 16),
    num_classes: int = 10,
    seed: int = 0,
    num_test: int | None = None,
    separation: float = 4.0,
) -> RawSplits:
    """Gaussian classes around smooth random prototypes: learnable, but not separable without error.

    Each class has a prototype image: Gaussian noise on a grid twice coarser than the image, upsampled
    bilinearly (so it has spatial structure a convolution can use), then orthogonalized across classes
    (when the image has at least ``num_classes`` pixels) and scaled so that any two prototypes lie exactly
    ``separation`` noise standard deviations apart. A sample is its class prototype plus unit Gaussian
    noise on every pixel. With the default separation of 4, telling two given classes apart costs about
    2% error (Φ(-2)), so the best classifier reaches roughly 85% accuracy on 10 classes.

    Args:
        data_dir: ignored; the data is generated.
        num_samples: training samples.
        input_shape: ``(C, H, W)``.
        num_classes: number of classes (labels are balanced).
        seed: seed of the generated data (independent of the validation-split seed).
        num_test: test samples; defaults to ``num_samples // 4`` (at least 1).
        separation: distance between class prototypes in units of the noise standard deviation.
    """
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise ValueError(f"synthetic input_shape must be (C, H, W) of positive sizes, got {input_shape}")
    if num_samples < 1 or num_classes < 2:
        raise ValueError(
            f"synthetic needs num_samples >= 1 and num_classes >= 2, got {num_samples}, {num_classes}"
        )
    if separation <= 0:
        raise ValueError(f"synthetic separation must be > 0, got {separation}")
    c, h, w = (int(s) for s in input_shape)
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randn((num_classes, c, max(1, h // 2), max(1, w // 2)), generator=generator)
    smooth = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False).flatten(1)
    if num_classes <= smooth.shape[1]:
        # Orthonormal prototypes (still smooth: combinations of smooth images) are equidistant.
        smooth = torch.linalg.qr(smooth.T).Q.T
    else:
        smooth = smooth / smooth.norm(dim=1, keepdim=True).clamp_min(1e-12)
    # Two orthogonal unit vectors lie sqrt(2) apart.
    prototypes = (smooth * (separation / math.sqrt(2))).reshape(num_classes, c, h, w)
    train_x, train_y = _samples(prototypes, num_samples, generator)
    n_test = max(1, num_samples // 4) if num_test is None else num_test
    test_x, test_y = _samples(prototypes, n_test, generator)
    return RawSplits(train_x, train_y, test_x, test_y, num_classes)

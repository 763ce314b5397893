"""Image-folder datasets: ``root/train/<class>/*.png`` and ``root/test/<class>/*.png``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from slimtrain.data.raw import RawSplits
from slimtrain.errors import DataFormatError, DatasetNotFoundError

__all__ = ["IMAGE_SUFFIXES", "load_image_folder"]

#: File name endings read as images (case-insensitive); other files are ignored.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
_MODES = {"RGB": 3, "L": 1}


def _class_dirs(split_dir: Path) -> list[str]:
    if not split_dir.is_dir():
        raise DatasetNotFoundError(f"image-folder: {split_dir} is not a directory")
    classes = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    if not classes:
        raise DatasetNotFoundError(f"image-folder: {split_dir} has no class sub-directories")
    return classes


def _read_split(split_dir: Path, classes: list[str], mode: str) -> tuple[Tensor, Tensor]:
    images: list[np.ndarray] = []
    labels: list[int] = []
    size: tuple[int, int] | None = None
    for label, name in enumerate(classes):
        class_dir = split_dir / name
        if not class_dir.is_dir():
            continue
        for path in sorted(class_dir.iterdir()):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(path) as image:
                    pixels = np.asarray(image.convert(mode))
            except (UnidentifiedImageError, OSError) as exc:
                raise DataFormatError(f"{path}: unreadable image ({exc})") from exc
            if size is None:
                size = pixels.shape[:2]
            elif pixels.shape[:2] != size:
                raise DataFormatError(
                    f"{path}: image is {pixels.shape[1]}×{pixels.shape[0]} but earlier images are "
                    f"{size[1]}×{size[0]}; all images must have the same size"
                )
            images.append(pixels)
            labels.append(label)
    if not images:
        raise DatasetNotFoundError(f"image-folder: no {'/'.join(IMAGE_SUFFIXES)} images under {split_dir}")
    stacked = torch.from_numpy(np.stack(images)).reshape(len(images), *size, -1)
    return stacked.permute(0, 3, 1, 2).float().div_(255.0).contiguous(), torch.tensor(labels)


def load_image_folder(data_dir: Path | None, mode: str = "RGB") -> RawSplits:
    """Images sorted into one directory per class, with a ``train`` and a ``test`` part.

    Class names are the sorted sub-directory names of ``train/``; label ``i`` is the ``i``-th name. Every
    class of ``test/`` must also exist in ``train/``. All images must have the same size. Inputs are
    normalized with per-channel statistics of the training split; the standard augmentation is a random
    crop with padding ``H // 8`` plus a random horizontal flip.

    Args:
        data_dir: the root holding ``train/`` and ``test/`` (required).
        mode: ``"RGB"`` (3 channels) or ``"L"`` (1 channel, grayscale); images are converted to it.
    """
    if data_dir is None:
        raise DatasetNotFoundError(
            "image-folder needs data_dir: a root holding train/<class>/ and test/<class>/"
        )
    if mode not in _MODES:
        raise ValueError(f"image-folder mode must be one of {sorted(_MODES)}, got {mode!r}")
    root = Path(data_dir)
    classes = _class_dirs(root / "train")
    unknown = sorted(set(_class_dirs(root / "test")) - set(classes))
    if unknown:
        raise DataFormatError(f"image-folder: {root / 'test'} has classes absent from train/: {unknown}")
    train_x, train_y = _read_split(root / "train", classes, mode)
    test_x, test_y = _read_split(root / "test", classes, mode)
    if test_x.shape[1:] != train_x.shape[1:]:
        raise DataFormatError(
            f"image-folder: test images are {tuple(test_x.shape[1:])} but train images are "
            f"{tuple(train_x.shape[1:])} (C, H, W) under {root}"
        )
    return RawSplits(
        train_x, train_y, test_x, test_y, len(classes), crop_padding=train_x.shape[2] // 8, flip=True
    )

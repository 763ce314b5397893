"""MNIST and Fashion-MNIST from IDX files (gzipped or not)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from slimtrain.data.files import find_dataset_dir, find_file
from slimtrain.data.idx import read_idx
from slimtrain.data.raw import RawSplits
from slimtrain.errors import DataFormatError, DatasetNotFoundError

__all__ = ["FASHION_MNIST_SYSTEM_DIRS", "IDX_FILES", "load_fashion_mnist", "load_mnist"]

#: File names (without ``.gz``) of the four IDX files, by split and role.
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
#: Where Debian's ``dataset-fashion-mnist`` package installs the files.
FASHION_MNIST_SYSTEM_DIRS: list[Path] = [Path("/usr/share/datasets/fashion-mnist")]

_STATS = {"mnist": ((0.1307,), (0.3081,)), "fashion-mnist": ((0.2860,), (0.3530,))}
_HOW_TO_GET = {
    "mnist": (
        "Put the four MNIST IDX files (train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
        "t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]; from "
        "https://yann.lecun.com/exdb/mnist/ or a mirror) in a directory and pass it as data_dir, "
        "or under $SLIMTRAIN_DATA_DIR/mnist."
    ),
    "fashion-mnist": (
        "Install the Debian package (apt-get install dataset-fashion-mnist), or put the four IDX files "
        "(from https://github.com/zalandoresearch/fashion-mnist) in a directory and pass it as data_dir, "
        "or under $SLIMTRAIN_DATA_DIR/fashion-mnist."
    ),
}


def _missing_idx_files(directory: Path) -> list[str]:
    names = [name for pair in IDX_FILES.values() for name in pair]
    return [f"{name}[.gz]" for name in names if find_file(directory, name) is None]


def _existing(directory: Path, name: str) -> Path:
    path = find_file(directory, name)
    if path is None:
        raise DatasetNotFoundError(f"{directory / name}[.gz] vanished while the dataset was being read")
    return path


def _read_split(directory: Path, images_name: str, labels_name: str) -> tuple[Tensor, Tensor]:
    images_path, labels_path = _existing(directory, images_name), _existing(directory, labels_name)
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.dim() != 3 or images.dtype != torch.uint8:
        raise DataFormatError(
            f"{images_path}: expected N×H×W uint8 images, got shape {tuple(images.shape)} {images.dtype}"
        )
    if labels.dim() != 1 or labels.dtype != torch.uint8:
        raise DataFormatError(f"{labels_path}: expected N uint8 labels, got shape {tuple(labels.shape)}")
    if images.shape[0] != labels.shape[0]:
        raise DataFormatError(
            f"{images_path} has {images.shape[0]} images but {labels_path} has {labels.shape[0]} labels"
        )
    if labels.numel() and int(labels.max()) > 9:
        raise DataFormatError(f"{labels_path}: label {int(labels.max())} is outside 0..9")
    return images.unsqueeze(1).float().div_(255.0), labels.long()


def _load_idx_dataset(name: str, data_dir: Path | None, system_dirs: list[Path]) -> RawSplits:
    directory = find_dataset_dir(
        name, data_dir, _missing_idx_files, how_to_get=_HOW_TO_GET[name], system_dirs=system_dirs
    )
    train_x, train_y = _read_split(directory, *IDX_FILES["train"])
    test_x, test_y = _read_split(directory, *IDX_FILES["test"])
    mean, std = _STATS[name]
    # Small crops only: flipping digits changes their meaning; clothing is mirror-symmetric.
    return RawSplits(
        train_x, train_y, test_x, test_y, 10, mean, std, crop_padding=2, flip=name == "fashion-mnist"
    )


def load_mnist(data_dir: Path | None) -> RawSplits:
    """MNIST (LeCun et al., 1998): 60,000 + 10,000 images 1×28×28, 10 classes.

    Normalized with mean 0.1307 and std 0.3081; the standard augmentation is a random crop with padding 2.
    """
    return _load_idx_dataset("mnist", data_dir, [])


def load_fashion_mnist(data_dir: Path | None) -> RawSplits:
    """Fashion-MNIST (Xiao et al., 2017): 60,000 + 10,000 images 1×28×28, 10 classes.

    Also found where Debian's ``dataset-fashion-mnist`` installs it. Normalized with mean 0.2860 and std
    0.3530; the standard augmentation is a random crop with padding 2 and a random horizontal flip.
    """
    return _load_idx_dataset("fashion-mnist", data_dir, FASHION_MNIST_SYSTEM_DIRS)

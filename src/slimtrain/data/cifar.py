"""CIFAR-10 and CIFAR-100 from the standard python-pickle archives.

CIFAR-10 (``cifar-10-batches-py``): ``data_batch_1`` .. ``data_batch_5``, ``test_batch``, ``batches.meta``;
CIFAR-100 (``cifar-100-python``): ``train``, ``test``, ``meta``. Each data file is a pickled dict with
``b"data"`` (N×3072 uint8, channel-major 3×32×32 rows) and ``b"labels"`` (CIFAR-10) or ``b"fine_labels"``
and ``b"coarse_labels"`` (CIFAR-100). See Krizhevsky, "Learning Multiple Layers of Features from Tiny
Images", 2009.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from slimtrain.data.files import checked_bytes, find_dataset_dir
from slimtrain.data.raw import RawSplits
from slimtrain.errors import DataFormatError

__all__ = ["load_cifar10", "load_cifar100"]

_CIFAR10_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
# Standard per-channel statistics of the training sets (R, G, B).
_CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
_CIFAR100_STATS = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
_HOW_TO_GET = (
    "Download and extract the 'python version' archive from https://www.cs.toronto.edu/~kriz/cifar.html "
    "and pass the directory that holds {archive}/ (or {archive}/ itself) as data_dir, "
    "or extract it under $SLIMTRAIN_DATA_DIR/{name}."
)
# Only what a pickled dict of numpy arrays needs: pickle would otherwise run arbitrary code from the file.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _load_pickle(path: Path) -> dict:
    try:
        content = _ArrayUnpickler(io.BytesIO(checked_bytes(path)), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
        raise DataFormatError(f"{path}: not a readable CIFAR pickle ({exc})") from exc
    if not isinstance(content, dict):
        raise DataFormatError(f"{path}: expected a pickled dict, got {type(content).__name__}")
    return content


def _read_batch(path: Path, label_key: bytes, num_classes: int) -> tuple[Tensor, Tensor]:
    batch = _load_pickle(path)
    if b"data" not in batch or label_key not in batch:
        raise DataFormatError(f"{path}: missing key b'data' or {label_key!r}; keys are {sorted(batch)}")
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[label_key])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataFormatError(f"{path}: b'data' must be N×3072 uint8, got {data.shape} {data.dtype}")
    if labels.shape != (data.shape[0],):
        raise DataFormatError(f"{path}: {labels.shape} labels for {data.shape[0]} images")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataFormatError(f"{path}: labels must lie in 0..{num_classes - 1}")
    inputs = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()).float().div_(255.0)
    return inputs, torch.from_numpy(labels.astype(np.int64))


def _read_batches(paths: list[Path], label_key: bytes, num_classes: int) -> tuple[Tensor, Tensor]:
    parts = [_read_batch(p, label_key, num_classes) for p in paths]
    return torch.cat([x for x, _ in parts]), torch.cat([y for _, y in parts])


def _missing(names: list[str]):
    return lambda directory: [n for n in names if not (directory / n).is_file()]


def load_cifar10(data_dir: Path | None) -> RawSplits:
    """CIFAR-10: 50,000 + 10,000 images 3×32×32, 10 classes.

    Normalized with the standard training-set statistics; the standard augmentation is a random crop with
    padding 4 plus a random horizontal flip.
    """
    names = [*_CIFAR10_TRAIN, "test_batch", "batches.meta"]
    archive = "cifar-10-batches-py"
    directory = find_dataset_dir(
        "cifar10",
        data_dir,
        _missing(names),
        subdirs=[archive],
        how_to_get=_HOW_TO_GET.format(archive=archive, name="cifar10"),
    )
    train_x, train_y = _read_batches([directory / n for n in _CIFAR10_TRAIN], b"labels", 10)
    test_x, test_y = _read_batches([directory / "test_batch"], b"labels", 10)
    return RawSplits(train_x, train_y, test_x, test_y, 10, *_CIFAR10_STATS, crop_padding=4, flip=True)


def load_cifar100(data_dir: Path | None, label_mode: str = "fine") -> RawSplits:
    """CIFAR-100: 50,000 + 10,000 images 3×32×32, 100 fine or 20 coarse classes.

    Normalized with the standard training-set statistics; the standard augmentation is a random crop with
    padding 4 plus a random horizontal flip.

    Args:
        data_dir: directory holding ``cifar-100-python/`` or its files.
        label_mode: ``"fine"`` (100 classes) or ``"coarse"`` (20 super-classes).
    """
    if label_mode not in ("fine", "coarse"):
        raise ValueError(f"cifar100 label_mode must be 'fine' or 'coarse', got {label_mode!r}")
    archive = "cifar-100-python"
    directory = find_dataset_dir(
        "cifar100",
        data_dir,
        _missing(["train", "test", "meta"]),
        subdirs=[archive],
        how_to_get=_HOW_TO_GET.format(archive=archive, name="cifar100"),
    )
    key, k = (b"fine_labels", 100) if label_mode == "fine" else (b"coarse_labels", 20)
    train_x, train_y = _read_batches([directory / "train"], key, k)
    test_x, test_y = _read_batches([directory / "test"], key, k)
    return RawSplits(train_x, train_y, test_x, test_y, k, *_CIFAR100_STATS, crop_padding=4, flip=True)

"""Datasets, splits, deterministic DDP-sharded batch loading and batched augmentation.

``load_dataset(name, ...)`` returns normalized :class:`DatasetSplits`; :class:`BatchLoader` iterates over
an :class:`ArrayDataset` in reproducible, rank-sharded batches, on the host or kept on a GPU.
"""

from slimtrain.data.dataset import ArrayDataset, BatchTransform, DatasetSplits
from slimtrain.data.idx import read_idx
from slimtrain.data.loader import BatchLoader, OnDevice, fits_on_device
from slimtrain.data.raw import RawSplits
from slimtrain.data.registry import DatasetBuilder, list_datasets, load_dataset, register_dataset
from slimtrain.data.transforms import (
    Compose,
    Normalize,
    RandomCrop,
    RandomHorizontalFlip,
    standard_augmentation,
)
from slimtrain.errors import DataFormatError, DatasetNotFoundError

__all__ = [
    "ArrayDataset",
    "BatchLoader",
    "BatchTransform",
    "Compose",
    "DataFormatError",
    "DatasetBuilder",
    "DatasetNotFoundError",
    "DatasetSplits",
    "Normalize",
    "OnDevice",
    "RandomCrop",
    "RandomHorizontalFlip",
    "RawSplits",
    "fits_on_device",
    "list_datasets",
    "load_dataset",
    "read_idx",
    "register_dataset",
    "standard_augmentation",
]

"""The dataset registry and :func:`load_dataset`, which turns a builder's output into ready splits.

The names live in a :class:`slimtrain.registry.Registry` of kind ``"dataset"``; installed packages add
datasets without being imported by slimtrain through the entry-point group ``slimtrain.datasets`` (each entry
point names a builder; its name is the dataset's name).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any, overload

import torch
from torch import Tensor

from slimtrain.data.cifar import load_cifar10, load_cifar100
from slimtrain.data.dataset import ArrayDataset, DatasetSplits
from slimtrain.data.digits import load_digits
from slimtrain.data.image_folder import load_image_folder
from slimtrain.data.mnist import load_fashion_mnist, load_mnist
from slimtrain.data.raw import RawSplits
from slimtrain.data.seeding import derive_generator
from slimtrain.data.split import stratified_split
from slimtrain.data.synthetic import load_synthetic
from slimtrain.data.transforms import Normalize, standard_augmentation
from slimtrain.registry import Registry

__all__ = ["DATASETS", "DatasetBuilder", "list_datasets", "load_dataset", "register_dataset"]

#: ``builder(data_dir, **options) -> RawSplits``; ``data_dir`` is a ``Path`` or ``None``.
DatasetBuilder = Callable[..., RawSplits]

DATASETS: Registry[DatasetBuilder] = Registry("dataset", entry_point_group="slimtrain.datasets")


@overload
def register_dataset(
    name: str, builder: None = None, *, replace: bool = False
) -> Callable[[DatasetBuilder], DatasetBuilder]: ...


@overload
def register_dataset(name: str, builder: DatasetBuilder, *, replace: bool = False) -> DatasetBuilder: ...


def register_dataset(
    name: str, builder: DatasetBuilder | None = None, *, replace: bool = False
) -> DatasetBuilder | Callable[[DatasetBuilder], DatasetBuilder]:
    """Make ``builder`` loadable as ``load_dataset(name, ...)``; without ``builder``, a decorator that does.

    Args:
        name: registry name (e.g. ``"mnist"``).
        builder: called as ``builder(data_dir, **options)``; returns unnormalized :class:`RawSplits`.
        replace: allow another builder to take over a registered name.

    Returns:
        ``builder`` (or the decorator).

    Raises:
        ValueError: ``name`` is registered to another builder and ``replace`` is false.
    """
    return DATASETS.register(name, builder, replace=replace)


def list_datasets() -> list[str]:
    """Names of all registered datasets, sorted."""
    return DATASETS.names()


def _check_options(name: str, builder: DatasetBuilder, options: dict[str, Any]) -> None:
    params = inspect.signature(builder).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = [p for p in params if p != "data_dir"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise TypeError(
            f"dataset {name!r} got unknown option(s) {unknown}; it accepts {accepted or 'no options'}"
        )


def _channel_stats(inputs: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation over all samples and pixels (float64 accumulation)."""
    flat = inputs.transpose(0, 1).reshape(inputs.shape[1], -1).double()
    std = flat.std(dim=1, correction=0).clamp_min(1e-6)
    return tuple(flat.mean(dim=1).tolist()), tuple(std.tolist())


def load_dataset(
    name: str,
    *,
    data_dir: str | Path | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    augment: bool = False,
    builder: DatasetBuilder | None = None,
    **options: Any,
) -> DatasetSplits:
    """Load a registered dataset (or one from ``builder``) as normalized train / validation / test splits.

    The validation split is carved from the training set, stratified by class, with exactly
    ``round(val_fraction * N)`` samples chosen by ``seed``; the test set is the dataset's own and does
    not depend on ``seed``. Inputs are normalized per channel with the dataset's standard statistics, or,
    for datasets without them (``synthetic``, ``image-folder``), with statistics of the training split
    (after the validation samples are removed).

    Args:
        name: a name from :func:`list_datasets`.
        data_dir: where to look first for the files (see each dataset's documentation).
        val_fraction: share of the training set held out for validation, in ``[0, 1)``; 0 gives an empty
            validation split.
        seed: seed of the validation split.
        augment: attach the dataset's standard train-time augmentation as ``DatasetSplits.augment``
            (``None`` when the dataset has none).
        builder: a builder to call instead of the registered one, with the contract of
            :func:`register_dataset`'s (a recipe's ``data.factory``); ``name`` then only names it (its
            import path).
        **options: dataset-specific options (e.g. ``num_samples`` for ``synthetic``).

    Raises:
        UnknownNameError: unknown dataset name (a ``ValueError``; the message lists the registered names).
        ValueError: bad ``val_fraction``.
        TypeError: an option the dataset does not accept.
        DatasetNotFoundError: the files were not found (the message lists the places looked).
        DataFormatError: a file is corrupted, truncated or malformed (the message names it).
    """
    builder = DATASETS.get(name) if builder is None else builder
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    _check_options(name, builder, options)
    raw = builder(None if data_dir is None else Path(data_dir), **options)
    if not isinstance(raw, RawSplits):
        raise TypeError(f"dataset {name!r}: builder returned {type(raw).__name__}, expected RawSplits")
    for split_name, inputs, targets in (
        ("train", raw.train_inputs, raw.train_targets),
        ("test", raw.test_inputs, raw.test_targets),
    ):
        # Checked before the validation split, whose indexing would silently drop or misalign samples.
        if inputs.shape[0] != targets.shape[0]:
            raise ValueError(
                f"dataset {name!r}: the {split_name} split has {inputs.shape[0]} inputs but "
                f"{targets.shape[0]} labels"
            )
    if raw.train_inputs.shape[1:] != raw.test_inputs.shape[1:]:
        raise ValueError(
            f"dataset {name!r}: train samples are {tuple(raw.train_inputs.shape[1:])} but test samples are "
            f"{tuple(raw.test_inputs.shape[1:])}"
        )
    train_idx, val_idx = stratified_split(raw.train_targets, val_fraction, derive_generator(seed))
    train_x = raw.train_inputs[train_idx]
    if raw.mean is None or raw.std is None:
        mean, std = _channel_stats(train_x)
    else:
        mean, std = raw.mean, raw.std
    normalize = Normalize(mean, std)
    k = raw.num_classes

    def split(inputs: Tensor, targets: Tensor, *, allow_empty: bool = False) -> ArrayDataset:
        return ArrayDataset(
            normalize(inputs).to(torch.float32), targets, num_classes=k, allow_empty=allow_empty
        )

    train = split(train_x, raw.train_targets[train_idx])
    val = split(raw.train_inputs[val_idx], raw.train_targets[val_idx], allow_empty=True)
    test = split(raw.test_inputs, raw.test_targets)
    return DatasetSplits(
        name=name,
        train=train,
        val=val,
        test=test,
        num_classes=k,
        input_shape=train.input_shape,
        mean=normalize.mean,
        std=normalize.std,
        augment=standard_augmentation(raw.crop_padding, raw.flip, mean, std) if augment else None,
    )


for _name, _builder in {
    "digits": load_digits,
    "mnist": load_mnist,
    "fashion-mnist": load_fashion_mnist,
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
    "image-folder": load_image_folder,
    "synthetic": load_synthetic,
}.items():
    register_dataset(_name, _builder)

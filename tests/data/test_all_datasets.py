"""Properties every registered dataset must have, each loaded from tiny files in its standard format.

Parametrized over ``list_datasets()``: a dataset registered without a test-data maker in ``MAKERS`` fails.
"""

from dataclasses import dataclass
from typing import Any

import pytest
import torch

from slimtrain.data import DatasetSplits, list_datasets, load_dataset
from slimtrain.data import mnist as mnist_module
from slimtrain.data import registry as data_registry
from slimtrain.data.files import DATA_DIR_ENV

from .test_data_cifar import write_cifar10, write_cifar100
from .test_data_idx import write_mnist
from .test_data_image_folder import write_folder


@dataclass(frozen=True)
class Declared:
    """What a dataset promises: the load options for the files a maker wrote, sample shape and classes."""

    options: dict[str, Any]
    input_shape: tuple[int, int, int]
    num_classes: int


def _digits(tmp_path):
    return Declared({}, (1, 8, 8), 10)  # bundled with scikit-learn


def _idx(name):
    def make(tmp_path):
        write_mnist(tmp_path / name, n_train=40, n_test=10, gz=name == "mnist")
        return Declared({"data_dir": tmp_path}, (1, 28, 28), 10)

    return make


def _cifar10(tmp_path):
    write_cifar10(tmp_path, per_batch=8, n_test=5)
    return Declared({"data_dir": tmp_path}, (3, 32, 32), 10)


def _cifar100(tmp_path):
    write_cifar100(tmp_path, n_train=24, n_test=4)
    return Declared({"data_dir": tmp_path}, (3, 32, 32), 100)


def _image_folder(tmp_path):
    write_folder(tmp_path, per_class=4, size=(6, 6))
    return Declared({"data_dir": tmp_path}, (3, 6, 6), 3)


def _synthetic(tmp_path):
    options = {"num_samples": 48, "input_shape": (2, 5, 5), "num_classes": 3, "num_test": 12}
    return Declared(options, (2, 5, 5), 3)


#: One test-data maker per registered dataset: ``maker(tmp_path) -> Declared``.
MAKERS = {
    "cifar10": _cifar10,
    "cifar100": _cifar100,
    "digits": _digits,
    "fashion-mnist": _idx("fashion-mnist"),
    "image-folder": _image_folder,
    "mnist": _idx("mnist"),
    "synthetic": _synthetic,
}


@pytest.fixture(autouse=True)
def _no_outside_data(monkeypatch):
    """Only the files a maker writes (or bundled data) may be found."""
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    monkeypatch.setattr(mnist_module, "FASHION_MNIST_SYSTEM_DIRS", [])


def _declared(name, tmp_path):
    if name not in MAKERS:
        pytest.fail(f"dataset {name!r} has no test-data maker: add one to MAKERS in {__name__}")
    return MAKERS[name](tmp_path)


def test_makers_cover_exactly_the_registered_datasets():
    """MAKERS names every registered dataset, and nothing that is not registered."""
    assert sorted(MAKERS) == list_datasets()


def _channel(stats):
    return torch.tensor(stats, dtype=torch.float64).view(1, -1, 1, 1)


@pytest.mark.parametrize("name", list_datasets())
def test_loads_normalized_splits_of_the_declared_shape(name, tmp_path):
    """Splits have the declared sample shape and classes, float32 inputs normalized by the splits' own
    mean/std (the dataset's standard statistics, or the training split's when it has none), labels in
    range, and the test set exactly as read from the files.
    """
    declared = _declared(name, tmp_path)
    data_dir = declared.options.get("data_dir")
    options = {k: v for k, v in declared.options.items() if k != "data_dir"}
    raw = data_registry.DATASETS.get(name)(data_dir, **options)
    splits = load_dataset(name, val_fraction=0.0, **declared.options)

    assert isinstance(splits, DatasetSplits) and splits.name == name
    assert splits.input_shape == declared.input_shape and splits.num_classes == declared.num_classes
    assert raw.num_classes == declared.num_classes
    assert len(splits.mean) == len(splits.std) == declared.input_shape[0]
    for split, inputs, targets in (
        (splits.train, raw.train_inputs, raw.train_targets),
        (splits.test, raw.test_inputs, raw.test_targets),
    ):
        assert split.inputs.dtype == torch.float32 and split.inputs.shape[1:] == declared.input_shape
        assert torch.isfinite(split.inputs).all()
        assert split.targets.min() >= 0 and split.targets.max() < declared.num_classes
        assert torch.equal(split.targets, targets)
        expected = (inputs.double() - _channel(splits.mean)) / _channel(splits.std)
        torch.testing.assert_close(split.inputs.double(), expected, rtol=1e-5, atol=1e-5)
    if raw.mean is not None:
        assert splits.mean == pytest.approx(raw.mean) and splits.std == pytest.approx(raw.std)
    else:
        flat = splits.train.inputs.transpose(0, 1).reshape(declared.input_shape[0], -1).double()
        assert flat.mean(1).abs().max() < 1e-4 and (flat.std(1, correction=0) - 1).abs().max() < 1e-3


@pytest.mark.parametrize("name", list_datasets())
def test_validation_split_is_carved_from_train(name, tmp_path):
    """Validation takes round(fraction·N) training samples, train keeps the rest; test does not change."""
    declared = _declared(name, tmp_path)
    whole = load_dataset(name, val_fraction=0.0, **declared.options)
    splits = load_dataset(name, val_fraction=0.25, seed=3, **declared.options)
    n = len(whole.train)
    assert len(splits.val) == round(0.25 * n) and len(splits.train) + len(splits.val) == n
    assert splits.val.inputs.shape[1:] == declared.input_shape
    assert torch.equal(splits.test.targets, whole.test.targets)
    assert sorted(splits.train.targets.tolist() + splits.val.targets.tolist()) == sorted(
        whole.train.targets.tolist()
    )


@pytest.mark.parametrize("name", list_datasets())
def test_augmentation_keeps_the_shape(name, tmp_path):
    """augment=True attaches the dataset's standard augmentation (or None), which keeps batch shapes."""
    declared = _declared(name, tmp_path)
    splits = load_dataset(name, augment=True, **declared.options)
    if splits.augment is not None:
        x = splits.train.inputs[:4]
        assert splits.augment(x, torch.Generator().manual_seed(0)).shape == x.shape

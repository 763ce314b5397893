"""CIFAR-10/100 loaders on tiny generated files in the python-pickle layout."""

import pickle

import numpy as np
import pytest
import torch

from slimtrain.data import DataFormatError, DatasetNotFoundError, load_dataset
from slimtrain.data.files import DATA_DIR_ENV


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)


def _dump(path, content):
    with open(path, "wb") as f:
        pickle.dump(content, f, protocol=2)


def _images(n, seed):
    return np.random.default_rng(seed).integers(0, 256, (n, 3072), dtype=np.uint8)


def write_cifar10(root, per_batch=4, n_test=5):
    directory = root / "cifar-10-batches-py"
    directory.mkdir(parents=True)
    for i in range(1, 6):
        labels = [(i + j) % 10 for j in range(per_batch)]
        _dump(
            directory / f"data_batch_{i}",
            {b"batch_label": b"x", b"labels": labels, b"data": _images(per_batch, i), b"filenames": []},
        )
    _dump(directory / "test_batch", {b"labels": list(range(n_test)), b"data": _images(n_test, 9)})
    _dump(directory / "batches.meta", {b"label_names": [b"c%d" % k for k in range(10)]})
    return directory


def write_cifar100(root, n_train=12, n_test=4):
    directory = root / "cifar-100-python"
    directory.mkdir(parents=True)
    for name, n, seed in (("train", n_train, 1), ("test", n_test, 2)):
        fine = [(7 * j) % 100 for j in range(n)]
        _dump(
            directory / name,
            {b"data": _images(n, seed), b"fine_labels": fine, b"coarse_labels": [f // 5 for f in fine]},
        )
    _dump(directory / "meta", {b"fine_label_names": [], b"coarse_label_names": []})
    return directory


def test_cifar10_layout_values_and_normalization(tmp_path):
    """Rows are decoded as channel-major 3×32×32 pixels and normalized with the CIFAR-10 statistics."""
    directory = write_cifar10(tmp_path)
    splits = load_dataset("cifar10", data_dir=tmp_path, val_fraction=0.0)
    assert splits.input_shape == (3, 32, 32) and splits.num_classes == 10
    assert len(splits.train) == 20 and len(splits.test) == 5
    raw = pickle.loads((directory / "test_batch").read_bytes(), encoding="bytes")[b"data"]
    mean = torch.tensor(splits.mean).view(1, 3, 1, 1)
    std = torch.tensor(splits.std).view(1, 3, 1, 1)
    pixels = (splits.test.inputs * std + mean) * 255
    expected = torch.from_numpy(raw.reshape(-1, 3, 32, 32)).float()
    assert torch.allclose(pixels, expected, atol=1e-3)
    assert splits.test.targets.tolist() == [0, 1, 2, 3, 4]


def test_cifar10_train_batches_are_concatenated_in_order(tmp_path):
    """The training set is data_batch_1..5 in order (labels checked with val_fraction=0)."""
    write_cifar10(tmp_path)
    splits = load_dataset("cifar10", data_dir=tmp_path / "cifar-10-batches-py", val_fraction=0.0)
    assert splits.train.targets.tolist() == [(i + j) % 10 for i in range(1, 6) for j in range(4)]


@pytest.mark.parametrize(("mode", "classes"), [("fine", 100), ("coarse", 20)])
def test_cifar100_label_modes(tmp_path, mode, classes):
    """cifar100 reads fine (100) or coarse (20) labels as asked."""
    write_cifar100(tmp_path)
    splits = load_dataset("cifar100", data_dir=tmp_path, val_fraction=0.0, label_mode=mode)
    fine = [(7 * j) % 100 for j in range(12)]
    assert splits.num_classes == classes
    assert splits.train.targets.tolist() == (fine if mode == "fine" else [f // 5 for f in fine])


def test_pickle_with_foreign_globals_is_refused(tmp_path):
    """A pickle referring to anything but numpy arrays is refused, naming the file."""
    directory = write_cifar10(tmp_path)
    _dump(directory / "test_batch", {b"labels": [0], b"data": _images(1, 0), b"evil": print})
    with pytest.raises(DataFormatError, match=r"test_batch.*refusing to load .*print"):
        load_dataset("cifar10", data_dir=tmp_path)


def test_wrong_row_length_is_reported(tmp_path):
    """A data array that is not N×3072 uint8 raises DataFormatError naming the batch file."""
    directory = write_cifar10(tmp_path)
    _dump(directory / "data_batch_3", {b"labels": [0], b"data": np.zeros((1, 100), np.uint8)})
    with pytest.raises(DataFormatError, match=r"data_batch_3.*N×3072"):
        load_dataset("cifar10", data_dir=tmp_path)


def test_missing_cifar_lists_archive_directory(tmp_path):
    """Without the files the error lists data_dir/cifar-10-batches-py among the places looked."""
    with pytest.raises(DatasetNotFoundError, match=r"cifar-10-batches-py: no such directory"):
        load_dataset("cifar10", data_dir=tmp_path)

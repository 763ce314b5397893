"""IDX reader and the MNIST / Fashion-MNIST loaders on generated files."""

import gzip
import hashlib
import struct

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from slimtrain.data import DataFormatError, DatasetNotFoundError, load_dataset, read_idx
from slimtrain.data import mnist as mnist_module
from slimtrain.data.files import DATA_DIR_ENV
from slimtrain.data.idx import parse_idx

_CODES = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C, np.dtype(">f8"): 0x0E}


def idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">HBB", 0, _CODES[array.dtype], array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    return header + array.tobytes()


def write_idx(path, array, gz):
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if gz else data)


def write_mnist(directory, n_train=30, n_test=10, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(
            directory / f"{prefix}-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n, 28, 28), np.uint8), gz
        )
        write_idx(directory / f"{prefix}-labels-idx1-ubyte{suffix}", (np.arange(n) % 10).astype(np.uint8), gz)


@pytest.fixture(autouse=True)
def _no_outside_data(monkeypatch):
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    monkeypatch.setattr(mnist_module, "FASHION_MNIST_SYSTEM_DIRS", [])


@given(
    shape=st.lists(st.integers(0, 4), min_size=1, max_size=3),
    dtype=st.sampled_from(sorted(_CODES, key=str)),
)
def test_parse_idx_round_trips(shape, dtype):
    """parse_idx returns the array written, with its shape and values (native byte order)."""
    array = ((np.arange(int(np.prod(shape))) * 37) % 256).astype(dtype).reshape(shape)
    out = parse_idx(idx_bytes(array), "x")
    assert tuple(out.shape) == tuple(shape)
    assert np.array_equal(out.numpy(), array.astype(array.dtype.newbyteorder("=")))


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_gz_and_raw(tmp_path, gz):
    """read_idx reads gzipped and raw files identically."""
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / ("a.gz" if gz else "a")
    write_idx(path, array, gz)
    assert torch.equal(read_idx(path), torch.from_numpy(array))


def test_truncated_raw_file_names_file(tmp_path):
    """A raw IDX file shorter than its header says raises DataFormatError naming the file."""
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(idx_bytes(np.zeros((3, 28, 28), np.uint8))[:-5])
    with pytest.raises(DataFormatError, match=r"train-images-idx3-ubyte.*truncated"):
        read_idx(path)


def test_truncated_gzip_names_file(tmp_path):
    """A cut-off gzip stream raises DataFormatError naming the file."""
    path = tmp_path / "labels.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros(100, np.uint8)))[:-12])
    with pytest.raises(DataFormatError, match=r"labels.gz"):
        read_idx(path)


def test_bad_magic_names_file(tmp_path):
    """A file not starting with two zero bytes and a known type code is rejected by name."""
    path = tmp_path / "junk"
    path.write_bytes(b"\x50\x4b\x03\x04" + bytes(20))
    with pytest.raises(DataFormatError, match=r"junk.*not an IDX file"):
        read_idx(path)


def test_checksum_mismatch_is_detected(tmp_path):
    """A SHA256SUMS line that does not match the file raises; a matching one passes."""
    array = np.arange(6, dtype=np.uint8)
    path = tmp_path / "x.gz"
    write_idx(path, array, gz=True)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    (tmp_path / "SHA256SUMS").write_text(f"{digest}  x.gz\n{'0' * 64}  other\n")
    assert torch.equal(read_idx(path), torch.from_numpy(array))
    (tmp_path / "SHA256SUMS").write_text(f"{'0' * 64}  x.gz\n")
    with pytest.raises(DataFormatError, match=r"x.gz.*SHA-256"):
        read_idx(path)


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_loader_reads_generated_files(tmp_path, gz):
    """load_dataset('mnist') gives 1×28×28 inputs normalized with the MNIST statistics and all labels."""
    write_mnist(tmp_path / "mnist", gz=gz)
    splits = load_dataset("mnist", data_dir=tmp_path, val_fraction=0.0)
    assert splits.input_shape == (1, 28, 28) and splits.num_classes == 10
    assert len(splits.train) == 30 and len(splits.test) == 10 and len(splits.val) == 0
    pixels = splits.train.inputs * 0.3081 + 0.1307
    assert pixels.min() >= -1e-6 and pixels.max() <= 1 + 1e-6
    assert sorted(splits.test.targets.tolist()) == list(range(10))


def test_images_labels_count_mismatch_is_reported(tmp_path):
    """Image and label files of different lengths are rejected, naming both files."""
    write_mnist(tmp_path, gz=False)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(7, np.uint8), gz=False)
    with pytest.raises(DataFormatError, match=r"t10k-images-idx3-ubyte has 10 images but .*t10k-labels"):
        load_dataset("mnist", data_dir=tmp_path)


def test_missing_data_lists_every_place_and_how_to_get_it(tmp_path, monkeypatch):
    """The not-found error names data_dir, $SLIMTRAIN_DATA_DIR/<name>, the system dir, and apt-get."""
    env_root = tmp_path / "env"
    (env_root / "fashion-mnist").mkdir(parents=True)
    monkeypatch.setenv(DATA_DIR_ENV, str(env_root))
    system = tmp_path / "usr-share-fashion-mnist"
    monkeypatch.setattr(mnist_module, "FASHION_MNIST_SYSTEM_DIRS", [system])
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("fashion-mnist", data_dir=tmp_path / "given")
    message = str(info.value)
    for place in (
        tmp_path / "given",
        tmp_path / "given" / "fashion-mnist",
        env_root / "fashion-mnist",
        system,
    ):
        assert f"{place}:" in message
    assert "lacks train-images-idx3-ubyte[.gz]" in message
    assert "apt-get install dataset-fashion-mnist" in message


def test_search_order_env_then_system(tmp_path, monkeypatch):
    """Without data_dir the loader finds $SLIMTRAIN_DATA_DIR/<name>, else the system directory."""
    system = tmp_path / "system"
    write_mnist(system, n_train=20, seed=1)
    monkeypatch.setattr(mnist_module, "FASHION_MNIST_SYSTEM_DIRS", [system])
    assert len(load_dataset("fashion-mnist", val_fraction=0.0).train) == 20
    write_mnist(tmp_path / "env" / "fashion-mnist", n_train=40, seed=2)
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "env"))
    assert len(load_dataset("fashion-mnist", val_fraction=0.0).train) == 40

"""Image-folder loader on tiny generated PNG files."""

import numpy as np
import pytest
from PIL import Image

from slimtrain.data import DataFormatError, load_dataset


def write_folder(root, per_class=3, size=(8, 8), classes=("zebra", "ant", "cat")):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for name in classes:
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i}.png")
    (root / "train" / "ant" / "notes.txt").write_text("ignored")


def test_classes_are_sorted_names_and_stats_come_from_train(tmp_path):
    """Label k is the k-th sorted class name; training inputs have per-channel mean 0, std 1."""
    write_folder(tmp_path)
    splits = load_dataset("image-folder", data_dir=tmp_path, val_fraction=0.0)
    assert splits.num_classes == 3 and splits.input_shape == (3, 8, 8)
    assert splits.train.targets.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]  # ant, cat, zebra
    flat = splits.train.inputs.transpose(0, 1).reshape(3, -1).double()
    assert flat.mean(1).abs().max() < 1e-5 and (flat.std(1, correction=0) - 1).abs().max() < 1e-4


def test_grayscale_mode_gives_one_channel(tmp_path):
    """mode='L' converts images to one channel."""
    write_folder(tmp_path)
    assert load_dataset("image-folder", data_dir=tmp_path, mode="L").input_shape == (1, 8, 8)


def test_mismatched_image_size_names_file(tmp_path):
    """An image of another size raises DataFormatError naming it."""
    write_folder(tmp_path)
    Image.new("RGB", (5, 8)).save(tmp_path / "train" / "cat" / "odd.png")
    with pytest.raises(DataFormatError, match=r"odd.png"):
        load_dataset("image-folder", data_dir=tmp_path)


def test_test_class_absent_from_train_is_reported(tmp_path):
    """A test/ class that train/ lacks is named in the error."""
    write_folder(tmp_path)
    (tmp_path / "test" / "dog").mkdir()
    with pytest.raises(DataFormatError, match=r"dog"):
        load_dataset("image-folder", data_dir=tmp_path)

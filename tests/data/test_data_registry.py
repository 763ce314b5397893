"""load_dataset: splits, normalization, options and the registry."""

from importlib import metadata

import pytest
import torch

from slimtrain.data import (
    ArrayDataset,
    BatchLoader,
    DatasetSplits,
    RawSplits,
    list_datasets,
    load_dataset,
    register_dataset,
)
from slimtrain.data import registry as data_registry
from slimtrain.data.synthetic import load_synthetic
from slimtrain.errors import UnknownNameError


@pytest.fixture
def scratch_registry():
    """Registrations made by a test are undone afterwards."""
    with data_registry.DATASETS.scratch():
        yield


def _rows(ds: ArrayDataset) -> set:
    return {tuple(r) for r in ds.inputs.flatten(1).tolist()}


def test_builtin_datasets_are_listed():
    """All built-in datasets are registered under their documented names."""
    assert {"digits", "mnist", "fashion-mnist", "cifar10", "cifar100", "image-folder", "synthetic"} <= set(
        list_datasets()
    )


def test_val_is_carved_from_train_and_disjoint():
    """Train and val are disjoint and together hold the original training samples.

    Val has round(fraction * N) samples and the test set is untouched.
    """
    kwargs = {"num_samples": 103, "input_shape": (1, 3, 3)}
    whole = load_dataset("synthetic", val_fraction=0.0, **kwargs)
    splits = load_dataset("synthetic", val_fraction=0.2, seed=4, **kwargs)
    assert len(splits.val) == 21 and len(splits.train) == 82
    assert not _rows(splits.train) & _rows(splits.val)
    # Normalization statistics differ with the split, so compare unnormalized pixels.
    raw = load_synthetic(None, **kwargs).train_inputs

    def pixels(s: DatasetSplits, ds: ArrayDataset):
        mean, std = torch.tensor(s.mean).view(1, -1, 1, 1), torch.tensor(s.std).view(1, -1, 1, 1)
        return (ds.inputs * std + mean).flatten(1)

    both = torch.cat([pixels(splits, splits.train), pixels(splits, splits.val)])
    assert torch.allclose(torch.sort(both, dim=0).values, torch.sort(raw.flatten(1), dim=0).values, atol=1e-5)
    assert len(splits.test) == len(whole.test) == 25


def test_digits_split_determinism_and_fixed_test_set():
    """The same seed gives identical splits; another seed changes val but never the test set."""
    a = load_dataset("digits", seed=0)
    b = load_dataset("digits", seed=0)
    c = load_dataset("digits", seed=1)
    assert torch.equal(a.val.inputs, b.val.inputs) and torch.equal(a.train.targets, b.train.targets)
    assert not torch.equal(a.val.inputs, c.val.inputs)
    assert torch.equal(a.test.inputs, c.test.inputs) and torch.equal(a.test.targets, c.test.targets)
    assert len(a.train) + len(a.val) + len(a.test) == 1797
    assert a.input_shape == (1, 8, 8) and a.num_classes == 10


def test_digits_statistics_match_the_data():
    """The digits constants are the pixel mean/std of all images scaled by 1/16 (to 4 decimals)."""
    s = load_dataset("digits", val_fraction=0.0)
    pixels = torch.cat([s.train.inputs, s.test.inputs]) * s.std[0] + s.mean[0]
    assert abs(pixels.mean().item() - s.mean[0]) < 1e-4 and abs(pixels.std().item() - s.std[0]) < 1e-4


def test_val_fraction_zero_gives_empty_val_that_loads():
    """val_fraction=0 gives an empty validation split with the right shape and no batches."""
    s = load_dataset("digits", val_fraction=0.0)
    assert len(s.val) == 0 and s.val.input_shape == (1, 8, 8)
    assert len(BatchLoader(s.val, 32, shuffle=False)) == 0


def test_augment_flag_attaches_standard_recipe():
    """augment=True attaches a shape-preserving transform; augment=False attaches none."""
    assert load_dataset("digits").augment is None
    s = load_dataset("digits", augment=True)
    x = s.train.inputs[:10]
    assert s.augment(x, torch.Generator().manual_seed(0)).shape == x.shape


@pytest.mark.parametrize(
    ("name", "kwargs", "error", "message"),
    [
        ("nope", {}, UnknownNameError, "unknown dataset 'nope'; registered: cifar10, cifar100, digits"),
        ("digits", {"val_fraction": 1.0}, ValueError, "val_fraction"),
        ("digits", {"colour": 3}, TypeError, r"unknown option\(s\) \['colour'\]"),
    ],
)
def test_bad_arguments_are_named(name, kwargs, error, message):
    """Unknown datasets, bad fractions and unknown options raise errors naming them."""
    with pytest.raises(error, match=message):
        load_dataset(name, **kwargs)


def test_register_custom_dataset(scratch_registry):
    """A registered builder is loadable by name and gets data_dir and its options; names are not reused."""
    seen = {}

    def build(data_dir, scale=1.0):
        seen.update(data_dir=data_dir, scale=scale)
        x = torch.rand(10, 2, 2, 2) * scale
        return RawSplits(x, torch.arange(10) % 2, x[:4], torch.tensor([0, 1, 0, 1]), 2)

    assert register_dataset("toy", build) is build
    s = load_dataset("toy", data_dir="somewhere", val_fraction=0.2, scale=2.0)
    assert seen["scale"] == 2.0 and str(seen["data_dir"]) == "somewhere"
    assert len(s.val) == 2 and s.num_classes == 2 and len(s.mean) == 2
    assert register_dataset("toy", build) is build  # the same builder again (a re-import) is fine
    with pytest.raises(ValueError, match=r"dataset named 'toy' is already registered"):
        register_dataset("toy", load_synthetic)
    register_dataset("toy", load_synthetic, replace=True)
    assert load_dataset("toy", num_samples=20, input_shape=(1, 2, 2), num_test=10).num_classes == 10

    @register_dataset("toy-decorated")
    def decorated(data_dir):
        return build(data_dir)

    assert "toy-decorated" in list_datasets() and load_dataset("toy-decorated").num_classes == 2


def test_installed_package_adds_a_dataset_through_entry_points(scratch_registry, monkeypatch):
    """A builder named by an entry point of group slimtrain.datasets is loadable without being imported."""

    class EntryPoint:
        name = "plugin-data"

        def load(self):
            return lambda data_dir: RawSplits(
                torch.rand(8, 1, 2, 2), torch.arange(8) % 4, torch.rand(4, 1, 2, 2), torch.arange(4), 4
            )

    monkeypatch.setattr(
        metadata, "entry_points", lambda group: [EntryPoint()] if group == "slimtrain.datasets" else []
    )
    monkeypatch.setattr(data_registry.DATASETS, "_entry_points_loaded", False)
    assert load_dataset("plugin-data", val_fraction=0.0).num_classes == 4
    assert "plugin-data" in list_datasets()

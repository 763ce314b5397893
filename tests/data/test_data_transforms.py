"""Batched augmentation invariants."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from slimtrain.data import Compose, Normalize, RandomCrop, RandomHorizontalFlip, standard_augmentation

shapes = st.tuples(st.integers(1, 5), st.integers(1, 3), st.integers(1, 9), st.integers(1, 9))


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


@given(shape=shapes, padding=st.integers(0, 4), seed=st.integers(0, 1000))
def test_crop_keeps_shape_and_takes_a_window_of_the_padded_image(shape, padding, seed):
    """Each cropped image equals some H×W window of its zero-padded original (float64, exact)."""
    x = torch.randn(shape, dtype=torch.float64)
    out = RandomCrop(padding)(x, _gen(seed))
    assert out.shape == x.shape
    n, _, h, w = shape
    padded = torch.nn.functional.pad(x, (padding,) * 4)
    for i in range(n):
        windows = [
            padded[i, :, dy : dy + h, dx : dx + w]
            for dy in range(2 * padding + 1)
            for dx in range(2 * padding + 1)
        ]
        assert any(torch.equal(out[i], win) for win in windows)


@given(shape=shapes)
def test_crop_with_zero_padding_is_identity(shape):
    """RandomCrop(0) returns the batch unchanged."""
    x = torch.randn(shape)
    assert torch.equal(RandomCrop(0)(x, _gen()), x)


def test_crop_fill_is_per_channel_and_offsets_are_per_sample():
    """Padding uses the given per-channel fill, and different samples get different offsets."""
    x = torch.zeros(64, 2, 4, 4)
    out = RandomCrop(2, fill=[7.0, -3.0])(x, _gen(1))
    assert set(out[:, 0].unique().tolist()) <= {0.0, 7.0} and set(out[:, 1].unique().tolist()) <= {0.0, -3.0}
    patterns = {tuple((out[i, 0] == 7.0).flatten().tolist()) for i in range(64)}
    assert len(patterns) > 5


@given(shape=shapes, seed=st.integers(0, 1000))
def test_flip_twice_with_same_draws_is_identity(shape, seed):
    """Flipping with the same random draws twice restores the batch; p=1 flips every image."""
    x = torch.randn(shape)
    assert torch.equal(RandomHorizontalFlip()(RandomHorizontalFlip()(x, _gen(seed)), _gen(seed)), x)
    assert torch.equal(RandomHorizontalFlip(p=1.0)(x, _gen(seed)), x.flip(3))
    assert torch.equal(RandomHorizontalFlip(p=0.0)(x, _gen(seed)), x)


def test_flip_mirrors_each_image_or_leaves_it():
    """Every output image is either the input or its mirror, and both occur in a large batch."""
    x = torch.randn(200, 1, 3, 5)
    out = RandomHorizontalFlip()(x, _gen(2))
    same = (out == x).flatten(1).all(1)
    mirrored = (out == x.flip(3)).flatten(1).all(1)
    assert bool((same | mirrored).all()) and 0 < int(mirrored.sum()) < 200


def test_normalize_matches_formula():
    """Normalize computes (x - mean) / std per channel."""
    x = torch.rand(3, 2, 4, 4, dtype=torch.float64)
    out = Normalize([0.5, 0.1], [0.2, 0.4])(x)
    expected = (x - torch.tensor([0.5, 0.1]).view(1, 2, 1, 1)) / torch.tensor([0.2, 0.4]).view(1, 2, 1, 1)
    assert torch.allclose(out, expected)


def test_transforms_reject_bad_input():
    """A non-4-D batch, a negative padding and a fill of the wrong length raise ValueError."""
    with pytest.raises(ValueError, match=r"N×C×H×W"):
        RandomCrop(1)(torch.zeros(3, 4, 4), _gen())
    with pytest.raises(ValueError, match=r"padding"):
        RandomCrop(-1)
    with pytest.raises(ValueError, match=r"3 values but the batch has 1 channels"):
        RandomCrop(1, fill=[0.0, 0.0, 0.0])(torch.zeros(2, 1, 4, 4), _gen())


def test_standard_augmentation_pads_with_black_pixels():
    """The standard recipe's padding equals normalized pixel value 0, i.e. -mean/std."""
    aug = standard_augmentation(4, flip=True, mean=[0.5], std=[0.25])
    assert isinstance(aug, Compose)
    out = aug(torch.full((32, 1, 8, 8), 9.0), _gen())
    assert set(out.unique().tolist()) <= {9.0, -2.0} and (out == -2.0).any()
    assert standard_augmentation(0, flip=False, mean=[0.5], std=[0.25]) is None

"""scikit-learn's bundled digits: 1,797 images 1×8×8, 10 classes, always available offline."""

from __future__ import annotations

from pathlib import Path

import torch

from slimtrain.data.raw import RawSplits
from slimtrain.data.seeding import derive_generator
from slimtrain.data.split import stratified_split

__all__ = ["DIGITS_MEAN", "DIGITS_STD", "load_digits"]

# Per-pixel statistics of all 1,797 images after scaling the 0..16 intensities to [0, 1].
DIGITS_MEAN = (0.3053,)
DIGITS_STD = (0.3760,)
# The test split is fixed, independent of the user's seed, so that test accuracy is comparable across runs.
_TEST_SPLIT_SEED = 20_150_401


def load_digits(data_dir: Path | None, test_fraction: float = 0.2) -> RawSplits:
    """The UCI optical digits as bundled with scikit-learn (``sklearn.datasets.load_digits``).

    The set has no official test split; a fixed stratified ``test_fraction`` of it (same for every seed)
    is held out as the test set. Intensities ``0..16`` are divided by 16; normalized with mean 0.3053 and
    std 0.3760. The standard augmentation is a random crop with padding 1 (no flip: it changes digits).

    Args:
        data_dir: ignored; the data ships with scikit-learn.
        test_fraction: share of the 1,797 images held out as the test set, in ``(0, 1)``.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"digits test_fraction must be in (0, 1), got {test_fraction}")
    # Imported here: scikit-learn takes a second to import and only this dataset needs it.
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    inputs = torch.tensor(bunch.data, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
    targets = torch.tensor(bunch.target, dtype=torch.int64)
    train_idx, test_idx = stratified_split(targets, test_fraction, derive_generator(_TEST_SPLIT_SEED))
    return RawSplits(
        inputs[train_idx],
        targets[train_idx],
        inputs[test_idx],
        targets[test_idx],
        10,
        DIGITS_MEAN,
        DIGITS_STD,
        crop_padding=1,
    )

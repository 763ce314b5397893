"""Synthetic data: shapes, determinism, learnable but not trivially separable."""

import torch
from hypothesis import given
from hypothesis import strategies as st

from slimtrain.data import load_dataset
from slimtrain.data.synthetic import load_synthetic


@given(
    shape=st.tuples(st.integers(1, 3), st.integers(1, 9), st.integers(1, 9)),
    k=st.integers(2, 6),
    n=st.integers(1, 40),
)
def test_shapes_and_balanced_labels(shape, k, n):
    """Inputs have the asked (C, H, W); labels lie in [0, k) with class counts differing by at most 1."""
    raw = load_synthetic(None, num_samples=n, input_shape=shape, num_classes=k)
    assert tuple(raw.train_inputs.shape) == (n, *shape)
    counts = torch.bincount(raw.train_targets, minlength=k)
    assert int(counts.max() - counts.min()) <= 1 and raw.train_targets.max() < k


def test_same_seed_same_data_other_seed_other_data():
    """The data seed fixes the data; another seed changes it."""
    a = load_synthetic(None, num_samples=8, seed=1).train_inputs
    assert torch.equal(a, load_synthetic(None, num_samples=8, seed=1).train_inputs)
    assert not torch.equal(a, load_synthetic(None, num_samples=8, seed=2).train_inputs)


def test_learnable_but_not_trivial():
    """Nearest class mean (fit on train) beats chance by far on test, yet makes errors."""
    splits = load_dataset(
        "synthetic", num_samples=2000, num_test=1000, input_shape=(1, 8, 8), val_fraction=0.0
    )
    x, y = splits.train.inputs.flatten(1), splits.train.targets
    means = torch.stack([x[y == k].mean(0) for k in range(splits.num_classes)])
    predicted = torch.cdist(splits.test.inputs.flatten(1), means).argmin(1)
    accuracy = (predicted == splits.test.targets).float().mean().item()
    assert 0.6 < accuracy < 0.98

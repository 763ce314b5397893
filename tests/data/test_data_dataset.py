"""ArrayDataset validation and DatasetSplits shape contract."""

import pytest
import torch

from slimtrain.data import ArrayDataset


def _data(n=4, c=1, h=3, w=3, classes=3):
    return torch.randn(n, c, h, w), torch.arange(n) % classes


def test_valid_dataset_indexes_both_tensors():
    """len() is N and indexing returns the matching input and target rows."""
    x, y = _data()
    ds = ArrayDataset(x, y, num_classes=3)
    assert len(ds) == 4 and ds.input_shape == (1, 3, 3)
    xi, yi = ds[torch.tensor([2, 0])]
    assert torch.equal(xi, x[[2, 0]]) and torch.equal(yi, y[[2, 0]])
    assert torch.equal(ds[1][0], x[1])


@pytest.mark.parametrize(
    ("inputs", "targets", "message"),
    [
        (torch.randn(4, 9), torch.zeros(4, dtype=torch.int64), "N×C×H×W"),
        (torch.randn(4, 1, 3, 3, dtype=torch.float64), torch.zeros(4, dtype=torch.int64), "float32"),
        (torch.randn(4, 1, 3, 3), torch.zeros(4, dtype=torch.int32), "int64"),
        (torch.randn(4, 1, 3, 3), torch.zeros(4, 1, dtype=torch.int64), "1-D"),
        (torch.randn(4, 1, 3, 3), torch.zeros(3, dtype=torch.int64), "4 inputs but 3 targets"),
        (torch.randn(0, 1, 3, 3), torch.zeros(0, dtype=torch.int64), "empty"),
        (torch.randn(4, 1, 3, 3), torch.tensor([0, 1, -1, 0]), "label -1"),
    ],
)
def test_invalid_construction_raises_clear_error(inputs, targets, message):
    """Wrong rank/dtype, mismatched lengths, empty data and negative labels are rejected by name."""
    with pytest.raises(ValueError, match=message):
        ArrayDataset(inputs, targets)


def test_label_out_of_range_for_num_classes():
    """A label >= num_classes is reported with its value."""
    x, _ = _data()
    with pytest.raises(ValueError, match=r"label 5 is out of range for num_classes=3"):
        ArrayDataset(x, torch.tensor([0, 1, 5, 2]), num_classes=3)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_inputs_name_the_sample(bad):
    """NaN or infinite pixels are rejected and the first bad sample index is named."""
    x, y = _data()
    x[2, 0, 1, 1] = bad
    with pytest.raises(ValueError, match=r"sample 2"):
        ArrayDataset(x, y)


def test_empty_allowed_when_asked():
    """allow_empty=True accepts N == 0 (used for an empty validation split)."""
    ds = ArrayDataset(torch.zeros(0, 1, 2, 2), torch.zeros(0, dtype=torch.int64), allow_empty=True)
    assert len(ds) == 0 and ds.input_shape == (1, 2, 2)


def test_subset_keeps_order():
    """subset(indices) returns exactly those rows, in the given order."""
    x, y = _data(n=6)
    sub = ArrayDataset(x, y).subset(torch.tensor([5, 1]))
    assert torch.equal(sub.inputs, x[[5, 1]]) and torch.equal(sub.targets, y[[5, 1]])

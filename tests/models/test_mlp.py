import itertools

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from slimtrain.models import create_model
from slimtrain.models.mlp import MLP


def count(model):
    return sum(p.numel() for p in model.parameters())


def test_lenet300_100_parameter_count():
    """LeNet-300-100 on 28×28×1: 784·300+300 + 300·100+100 + 100·10+10 = 266,610 parameters."""
    assert count(create_model("lenet300_100", in_channels=1, image_size=28)) == 266_610


def test_bias_free_mlp():
    """bias=False removes every bias: 784·300 + 300·100 + 100·10 = 266,200 parameters."""
    model = create_model("mlp", in_channels=1, image_size=28, bias=False)
    assert all(m.bias is None for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert count(model) == 266_200


@given(
    widths=st.lists(st.integers(1, 9), max_size=3),
    channels=st.integers(1, 3),
    size=st.integers(1, 6),
    bias=st.booleans(),
)
def test_mlp_layout_follows_widths(widths, channels, size, bias):
    """The MLP has one hidden layer per width, chained from C·H·W features to the classifier."""
    model = create_model(
        "mlp", num_classes=4, in_channels=channels, image_size=size, widths=widths, bias=bias
    )
    dims = [channels * size * size, *widths, 4]
    layers = [*model.hidden, model.classifier]
    assert [(layer.in_features, layer.out_features) for layer in layers] == list(itertools.pairwise(dims))
    assert count(model) == sum(i * o + (o if bias else 0) for i, o in itertools.pairwise(dims))
    assert model(torch.randn(2, channels, size, size)).shape == (2, 4)


def test_mlp_is_a_relu_network():
    """Without hidden layers the MLP is affine; bias-free with hidden layers it is positively homogeneous."""
    linear = create_model("mlp", in_channels=1, image_size=3, widths=())
    x, y = torch.randn(1, 1, 3, 3, dtype=torch.float64), torch.randn(1, 1, 3, 3, dtype=torch.float64)
    linear.double()
    bias = linear(torch.zeros_like(x))
    torch.testing.assert_close(linear(x + y) - bias, (linear(x) - bias) + (linear(y) - bias))
    deep = create_model("mlp", in_channels=1, image_size=3, widths=(5, 5), bias=False).double()
    torch.testing.assert_close(deep(2.5 * x), 2.5 * deep(x))


def test_invalid_width_is_named():
    """A non-positive width raises a ValueError naming its index."""
    with pytest.raises(ValueError, match=r"widths\[1\]"):
        MLP(4, 2, widths=(3, 0))

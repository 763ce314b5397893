import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from slimtrain.models import create_model
from slimtrain.models.sizes import conv_output_size, pool_output_size


def count(model):
    return sum(p.numel() for p in model.parameters())


def test_lenet5_caffe_parameter_count():
    """DLRT LeNet-5 on 28×28×1: 520 + 25,050 + 400,500 + 5,010 = 431,080 parameters, flatten size 800."""
    model = create_model("lenet5_caffe", in_channels=1, image_size=28)
    assert model.hidden[0].in_features == 800
    assert count(model) == 431_080


def test_lenet5_caffe_on_cifar_shapes():
    """On 32×32×3 the Caffe LeNet-5 flattens 50·5·5 = 1250 features (as the DLRT CIFAR variant)."""
    assert create_model("lenet5_caffe", in_channels=3, image_size=32).hidden[0].in_features == 1250


@pytest.mark.parametrize(("size", "flatten"), [(28, 400), (32, 576), (8, 64)])
def test_lenet5_flatten_sizes(size, flatten):
    """Classic LeNet-5: 16·5·5 = 400 features at 28×28, 16·6·6 at 32×32, 16·2·2 at 8×8 (padding (2, 2))."""
    assert create_model("lenet5", in_channels=1, image_size=size).hidden[0].in_features == flatten


def test_lenet5_classic_parameter_count():
    """LeNet-5 on 28×28×1: 156 + 2,416 + 48,120 + 10,164 + 850 = 61,706 parameters."""
    assert count(create_model("lenet5", in_channels=1, image_size=28)) == 61_706


def test_explicit_padding_enables_small_inputs():
    """lenet5_caffe with padding (2, 2) runs on 8×8 inputs (50·2·2 = 200 features)."""
    model = create_model("lenet5_caffe", in_channels=1, image_size=8, padding=(2, 2))
    assert model.hidden[0].in_features == 200
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)


@pytest.mark.parametrize("padding", [(1,), (1, -1), (1.0, 0)])
def test_bad_padding_is_named(padding):
    """Padding other than two non-negative ints raises a ValueError naming `padding`."""
    with pytest.raises(ValueError, match="padding"):
        create_model("lenet5", image_size=28, padding=padding)


@given(size=st.integers(1, 40), pad1=st.integers(0, 3), pad2=st.integers(0, 3))
def test_lenet5_any_size_builds_or_refuses(size, pad1, pad2):
    """For any size and padding, lenet5 either runs with the predicted flatten size or refuses by name."""
    side = pool_output_size(
        conv_output_size(pool_output_size(conv_output_size(size, 5, padding=pad1)), 5, padding=pad2)
    )
    try:
        model = create_model("lenet5", in_channels=1, image_size=size, padding=(pad1, pad2))
    except ValueError as error:
        assert "too small" in str(error)
        return
    assert model.hidden[0].in_features == 16 * side * side
    assert model(torch.randn(1, 1, size, size)).shape == (1, 10)


@given(size=st.integers(1, 30), kernel=st.integers(1, 5), stride=st.integers(1, 3), padding=st.integers(0, 2))
def test_conv_output_size_matches_torch(size, kernel, stride, padding):
    """conv_output_size agrees with nn.Conv2d whenever the convolution is defined."""
    predicted = conv_output_size(size, kernel, stride, padding)
    conv = torch.nn.Conv2d(1, 1, kernel, stride=stride, padding=padding)
    if predicted < 1:
        with pytest.raises(RuntimeError):
            conv(torch.zeros(1, 1, size, size))
    else:
        assert conv(torch.zeros(1, 1, size, size)).shape[-1] == predicted


@given(size=st.integers(1, 30), ceil_mode=st.booleans())
def test_pool_output_size_matches_torch(size, ceil_mode):
    """pool_output_size agrees with nn.MaxPool2d(2) whenever the pool is defined."""
    predicted = pool_output_size(size, 2, ceil_mode)
    pool = torch.nn.MaxPool2d(2, ceil_mode=ceil_mode)
    if predicted < 1:
        with pytest.raises(RuntimeError):
            pool(torch.zeros(1, 1, size, size))
    else:
        assert pool(torch.zeros(1, 1, size, size)).shape[-1] == predicted

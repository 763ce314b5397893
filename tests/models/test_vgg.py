import pytest
import torch
from torch import nn

from slimtrain.models import create_model


def count(model):
    return sum(p.numel() for p in model.parameters())


def test_vgg16_bn_layout():
    """VGG-16-BN has 13 convs with BN and 5 pools, with widths 64,64,128,128,256×3,512×6."""
    model = create_model("vgg16_bn", width_multiplier=0.125)
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [8, 8, 16, 16, 32, 32, 32, 64, 64, 64, 64, 64, 64]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.features) == 13
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.features) == 5


def test_vgg16_bn_parameter_count():
    """VGG-16-BN on 32×32×3, 10 classes: 14,724,042 parameters (bias-free convs before BN).

    That is the usual CIFAR count 14,728,266 minus the 4,224 redundant conv biases.
    """
    model = create_model("vgg16_bn")
    assert count(model) == 14_724_042


@pytest.mark.parametrize(("size", "side"), [(8, 1), (28, 1), (32, 1), (64, 2), (40, 2)])
def test_classifier_adapts_to_image_size(size, side):
    """The classifier reads channels·s² features, s = side of the final map (5 ceil-mode halvings)."""
    model = create_model("vgg16_bn", in_channels=1, image_size=size, width_multiplier=0.125)
    assert model.classifier.in_features == 64 * side * side
    assert model.features(torch.randn(2, 1, size, size)).shape[-1] == side


def test_width_multiplier_scales_widths():
    """width_multiplier 0.5 halves every conv width (64 → 32 ... 512 → 256)."""
    model = create_model("vgg16_bn", width_multiplier=0.5)
    assert [m.out_channels for m in model.features if isinstance(m, nn.Conv2d)][::3] == [
        32,
        64,
        128,
        256,
        256,
    ]


@pytest.mark.parametrize("value", [0, -1.0, True])
def test_invalid_width_multiplier(value):
    """A non-positive or boolean width_multiplier raises a ValueError naming it."""
    with pytest.raises(ValueError, match="width_multiplier"):
        create_model("vgg16_bn", width_multiplier=value)

import pytest
import torch
from torch import nn

from slimtrain.models import create_model


def count(model):
    return sum(p.numel() for p in model.parameters())


def test_wrn28_10_default():
    """WRN-28-10 for 100 classes: 36,536,884 parameters (the paper's 36.5 M), widths 160/320/640, runs."""
    model = create_model("wrn28", num_classes=100, in_channels=1, image_size=8)
    assert count(model) == 36_536_884 - 2 * 16 * 9  # the stem sees 1 channel instead of 3
    widths = [stage[0].conv1.out_channels for stage in (model.layer1, model.layer2, model.layer3)]
    assert widths == [160, 320, 640]
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 100)


def test_wrn28_structure():
    """WRN-28-2 has 4 blocks per stage: 25 3×3 convs and 3 1×1 shortcut convs."""
    model = create_model("wrn28", widen_factor=2)
    kernels = [m.kernel_size for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert kernels.count((3, 3)) == 25 and kernels.count((1, 1)) == 3
    assert len(model.layer1) == len(model.layer2) == len(model.layer3) == 4


def test_dropout_acts_in_training_only():
    """Dropout makes training-mode outputs random; in eval mode the model equals its dropout-free twin."""
    torch.manual_seed(1)
    dropped = create_model("wrn28", in_channels=1, image_size=8, widen_factor=1, dropout=0.3)
    torch.manual_seed(1)
    plain = create_model("wrn28", in_channels=1, image_size=8, widen_factor=1)
    x = torch.randn(2, 1, 8, 8)
    dropped.eval(), plain.eval()
    torch.testing.assert_close(dropped(x), plain(x))
    dropped.train()
    assert not torch.equal(dropped(x), dropped(x))


def test_final_bn_momentum():
    """The final BatchNorm uses PyTorch's momentum 0.1 by default and 0.9 when asked (SFW reference)."""
    assert create_model("wrn28", widen_factor=1).bn.momentum == 0.1
    assert create_model("wrn28", widen_factor=1, final_bn_momentum=0.9).bn.momentum == 0.9


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"widen_factor": 0}, "widen_factor"),
        ({"dropout": 1.5}, "dropout"),
        ({"final_bn_momentum": -1}, "momentum"),
    ],
)
def test_invalid_options_are_named(options, message):
    """Invalid widen_factor, dropout or momentum raise a ValueError naming the option."""
    with pytest.raises(ValueError, match=message):
        create_model("wrn28", **options)

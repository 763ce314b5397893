import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from slimtrain.models import create_model
from slimtrain.models.resnet_cifar import RESNET_DEPTHS, CifarResNet, ZeroPadShortcut


def count(model):
    return sum(p.numel() for p in model.parameters())


def test_resnet20_parameter_count():
    """ResNet-20, width 16, shortcut A, 10 classes: 269,722 parameters (He et al.'s 0.27 M).

    Stem 3·16·9 + 32 = 464; stage 1: 3·(2·16·16·9 + 2·32) = 14,016; stage 2: (16·32·9 + 32·32·9 + 128)
    + 2·(2·32·32·9 + 128) = 51,072; stage 3: (32·64·9 + 64·64·9 + 256) + 2·(2·64·64·9 + 256) = 203,520;
    classifier 64·10 + 10 = 650.
    """
    assert count(create_model("resnet20", in_channels=3, image_size=32)) == 269_722


def test_swd_width_resnet20_parameter_count():
    """ResNet-20 with width 64 and 1×1 shortcuts has the SWD reference's ≈ 4.33 M parameters (4,327,754)."""
    model = create_model("resnet20", width=64, shortcut="B")
    assert count(model) == 4_327_754


@pytest.mark.parametrize("depth", RESNET_DEPTHS)
def test_depth_counts_weighted_layers(depth):
    """ResNet-(6n+2) has 6n+1 3×3 convs plus the classifier, i.e. `depth` weighted layers, in 3n blocks."""
    model = create_model(f"resnet{depth}", width=2)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs) + 1 == depth
    assert len(model.layer1) == len(model.layer2) == len(model.layer3) == (depth - 2) // 6


def test_bn_after_add_adds_one_batchnorm_per_block():
    """bn_after_add adds a BatchNorm `bn3` per block: 9 in ResNet-20, 2·3·(16 + 32 + 64) = 672 parameters."""
    plain = create_model("resnet20")
    gated = create_model("resnet20", bn_after_add=True)
    blocks = [b for stage in (gated.layer1, gated.layer2, gated.layer3) for b in stage]
    assert all(isinstance(b.bn3, nn.BatchNorm2d) for b in blocks)
    assert all(b.bn3 is None for stage in (plain.layer1, plain.layer2, plain.layer3) for b in stage)
    assert count(gated) - count(plain) == 672
    bns = [m for m in gated.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) - len([m for m in plain.modules() if isinstance(m, nn.BatchNorm2d)]) == 9


def test_bn_after_add_is_applied_after_the_addition():
    """With bn3 the identity (eps 0, eval), the gated network computes exactly the plain one (float64)."""
    plain = create_model("resnet8", in_channels=1, image_size=8).double().eval()
    gated = create_model("resnet8", in_channels=1, image_size=8, bn_after_add=True).double().eval()
    missing = gated.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert missing and all(".bn3." in key for key in missing)
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    for module in gated.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.eps = plain.bn1.eps
    for block in (gated.layer1[0], gated.layer2[0], gated.layer3[0]):
        block.bn3.eps = 0.0
    torch.testing.assert_close(gated(x), plain(x))
    gated.layer2[0].bn3.weight.data.fill_(2.0)
    assert not torch.allclose(gated(x), plain(x))


def test_shortcut_b_adds_projection_convs():
    """Shortcut B adds a 1×1 conv + BN (`shortcut.0`, `shortcut.1`) at the 2 downsampling blocks only.

    Extra parameters for width 16: 16·32 + 2·32 + 32·64 + 2·64 = 2,752.
    """
    option_a, option_b = create_model("resnet20"), create_model("resnet20", shortcut="B")
    assert count(option_b) - count(option_a) == 2_752
    one_by_one = [
        n for n, m in option_b.named_modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)
    ]
    assert one_by_one == ["layer2.0.shortcut.0", "layer3.0.shortcut.0"]
    assert isinstance(option_b.layer2[0].shortcut[1], nn.BatchNorm2d)
    assert not any(isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) for m in option_a.modules())
    assert isinstance(option_a.layer3[0].shortcut, ZeroPadShortcut)
    assert len(option_a.layer1[0].shortcut) == 0  # identity


@given(
    size=st.integers(1, 12),
    in_channels=st.integers(1, 4),
    extra=st.integers(0, 5),
    stride=st.sampled_from([1, 2]),
)
def test_zero_pad_shortcut(size, in_channels, extra, stride):
    """Option A keeps x subsampled by `stride` in the middle channels and zeros elsewhere; shape = conv's."""
    x = torch.randn(2, in_channels, size, size)
    out = ZeroPadShortcut(in_channels, in_channels + extra, stride)(x)
    conv = nn.Conv2d(in_channels, 1, 3, stride=stride, padding=1)
    assert out.shape == (2, in_channels + extra, *conv(x).shape[-2:])
    before = extra // 2
    torch.testing.assert_close(out[:, before : before + in_channels], x[:, :, ::stride, ::stride])
    assert out[:, :before].abs().sum() == 0 and out[:, before + in_channels :].abs().sum() == 0


def test_kaiming_initialisation():
    """Convs are Kaiming-normal (fan_out): the empirical std of a 64→64 3×3 conv is close to √(2/(64·9))."""
    conv = create_model("resnet20").layer3[1].conv1
    expected = (2 / (64 * 9)) ** 0.5
    assert abs(conv.weight.std().item() / expected - 1) < 0.05


@pytest.mark.parametrize(
    ("options", "message"),
    [({"width": 0}, "width"), ({"shortcut": "C"}, "shortcut"), ({"bn_after_add": "yes"}, "bn_after_add")],
)
def test_invalid_options_are_named(options, message):
    """Invalid width, shortcut or bn_after_add values raise a ValueError naming the option."""
    with pytest.raises(ValueError, match=message):
        create_model("resnet8", **options)


def test_depth_must_be_6n_plus_2():
    """A depth that is not 6n+2 raises a ValueError naming `depth`."""
    with pytest.raises(ValueError, match="depth"):
        CifarResNet(21, num_classes=10, in_channels=3)

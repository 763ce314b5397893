"""Tests of the im2col first convolution (spec nnbcd.md §2.6, §7.7)."""

import torch
import torch.nn.functional as F

from slimtrain.bcd.conv_im2col import Im2colConv


def test_im2col_product_equals_conv2d_in_feature_layout():
    """X̄W₁ reshaped to position-major, channel-minor features equals F.conv2d (stride 2, no padding)."""
    conv = Im2colConv(in_channels=2, out_channels=5, image_size=(9, 11))
    images = torch.randn(4, 2, 9, 11, dtype=torch.float64)
    w = torch.randn(conv.patch_size, conv.out_channels, dtype=torch.float64)
    features = conv.to_features(conv.patches(images) @ w)  # (P·S) × N
    kernel = w.T.reshape(5, 2, 3, 3)
    reference = F.conv2d(images, kernel, stride=2)  # (N, S, H', W')
    assert conv.out_size == reference.shape[2:]
    expected = reference.permute(0, 2, 3, 1).reshape(4, -1).T
    assert torch.allclose(features, expected, atol=1e-12)
    assert torch.allclose(conv.to_module(w)(images), expected.T, atol=1e-12)


def test_feature_layout_round_trips():
    """to_rows inverts to_features, and feature index p·S + s holds position p, channel s."""
    conv = Im2colConv(in_channels=1, out_channels=3, image_size=(7, 7))
    rows = torch.randn(2 * conv.positions, 3)
    features = conv.to_features(rows)
    assert torch.equal(conv.to_rows(features), rows)
    n, p, s = 1, 4, 2
    assert features[p * 3 + s, n] == rows[n * conv.positions + p, s]


def test_paper_geometry():
    """28×28×1 input, 3×3 stride 2 → 13×13 positions and 32·169 = 5408 features (spec §2.6)."""
    conv = Im2colConv(1, 32, (28, 28))
    assert conv.positions == 169
    assert conv.out_features == 5408
    assert conv.patch_size == 9

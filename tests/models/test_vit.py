import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from slimtrain.models import create_model
from slimtrain.models.vit import MultiHeadSelfAttention, default_patch_size

SMALL = {"dim": 16, "depth": 2, "heads": 2}


@pytest.mark.parametrize(("size", "patch"), [(32, 4), (28, 4), (8, 2), (7, 1), (10, 2)])
def test_default_patch_size_examples(size, patch):
    """The default patch is 4 on 32×32 and 28×28, 2 on 8×8 and 10×10, 1 on 7×7."""
    assert default_patch_size(size) == patch


@given(size=st.integers(1, 200))
def test_default_patch_size_divides(size):
    """The default patch size divides the image size and is at most min(4, size // 4) (and at least 1)."""
    patch = default_patch_size(size)
    assert size % patch == 0
    assert 1 <= patch <= max(1, min(4, size // 4))


@pytest.mark.parametrize(("size", "tokens"), [(32, 64), (28, 49), (8, 16)])
def test_token_count(size, tokens):
    """The position embedding covers the class token plus (size / patch)² patch tokens."""
    model = create_model("vit_tiny", in_channels=1, image_size=size, **SMALL)
    assert model.pos_embed.shape == (1, tokens + 1, 16)


def test_patch_size_must_divide_image_size():
    """A patch size that does not divide the image size raises a ValueError listing the valid ones."""
    with pytest.raises(
        ValueError, match=r"patch_size=5 does not divide image_size=28.*\[1, 2, 4, 7, 14, 28\]"
    ):
        create_model("vit_tiny", image_size=28, patch_size=5)


def test_heads_must_divide_dim():
    """A head count not dividing dim raises a ValueError naming both."""
    with pytest.raises(ValueError, match="dim=16 must be divisible by heads=3"):
        create_model("vit_tiny", dim=16, heads=3, depth=1)


def test_attention_is_made_of_linear_layers():
    """Every block holds q, k, v, proj, fc1, fc2 as nn.Linear: 6·depth + 1 linear layers in all."""
    model = create_model("vit_tiny", **SMALL)
    assert sum(isinstance(m, nn.Linear) for m in model.modules()) == 6 * 2 + 1
    for block in model.blocks:
        assert all(isinstance(getattr(block.attn, n), nn.Linear) for n in ("q", "k", "v", "proj"))


def test_default_vit_tiny_size():
    """vit_tiny defaults to DeiT-Tiny sizes: dim 192, 12 blocks of 3 heads, MLP width 768."""
    model = create_model("vit_tiny")
    assert len(model.blocks) == 12
    assert model.blocks[0].attn.heads == 3
    assert model.blocks[0].fc1.weight.shape == (768, 192)


def test_attention_matches_torch_multihead_attention():
    """MultiHeadSelfAttention computes the same function as nn.MultiheadAttention with the same weights."""
    torch.manual_seed(0)
    ours = MultiHeadSelfAttention(12, 3).double()
    reference = nn.MultiheadAttention(12, 3, batch_first=True).double()
    with torch.no_grad():
        reference.in_proj_weight.copy_(torch.cat([ours.q.weight, ours.k.weight, ours.v.weight]))
        reference.in_proj_bias.copy_(torch.cat([ours.q.bias, ours.k.bias, ours.v.bias]))
        reference.out_proj.weight.copy_(ours.proj.weight)
        reference.out_proj.bias.copy_(ours.proj.bias)
    x = torch.randn(2, 5, 12, dtype=torch.float64)
    expected, _ = reference(x, x, x, need_weights=False)
    torch.testing.assert_close(ours(x), expected)

"""Vision transformer for small images (Dosovitskiy et al., *An Image is Worth 16x16 Words*, ICLR 2021).

Attention is written with separate ``nn.Linear`` layers for queries, keys, values and the output
projection, so that methods acting on linear layers (pruning, low-rank factorisation) reach attention too.
"""

from __future__ import annotations

import torch
from torch import nn

from slimtrain.models.registry import register_model
from slimtrain.models.sizes import check_positive_int, check_positive_number


def default_patch_size(image_size: int) -> int:
    """Return the largest divisor of ``image_size`` that is at most ``min(4, image_size // 4)`` (≥ 1).

    This gives 4×4 patches on 32×32 and 28×28 images (64 and 49 tokens) and 2×2 patches on 8×8 images
    (16 tokens).
    """
    limit = max(1, min(4, image_size // 4))
    return max(p for p in range(1, limit + 1) if image_size % p == 0)


class MultiHeadSelfAttention(nn.Module):
    """Multi-head self-attention with ``q``, ``k``, ``v`` and ``proj`` as ``nn.Linear`` layers.

    ``proj(concat_h softmax(q_h k_hᵀ / √d_h) v_h)`` with ``d_h = dim / heads`` (Vaswani et al., 2017).

    Args:
        dim: Token dimension.
        heads: Number of heads; must divide ``dim``.
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim={dim} must be divisible by heads={heads}")
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map tokens ``(N, T, dim)`` to ``(N, T, dim)``."""
        n, t, dim = x.shape

        def split(y: torch.Tensor) -> torch.Tensor:
            return y.reshape(n, t, self.heads, dim // self.heads).transpose(1, 2)

        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        weights = torch.softmax(q @ k.transpose(-2, -1) * (dim // self.heads) ** -0.5, dim=-1)
        return self.proj((weights @ v).transpose(1, 2).reshape(n, t, dim))


class TransformerBlock(nn.Module):
    """Pre-norm encoder block: ``x + attn(norm1(x))`` then ``x + fc2(GELU(fc1(norm2(x))))``.

    Args:
        dim: Token dimension.
        heads: Attention heads.
        mlp_ratio: Hidden width of the MLP relative to ``dim``.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        hidden = max(1, round(dim * mlp_ratio))
        self.norm1 = nn.LayerNorm(dim)
        self.attn = MultiHeadSelfAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.activation = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block to tokens ``(N, T, dim)``."""
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(self.activation(self.fc1(self.norm2(x))))


class VisionTransformer(nn.Module):
    """ViT: ``patch_embed`` conv, class token, learned ``pos_embed``, ``blocks``, ``norm``, ``classifier``.

    The classifier reads the class token. Initialisation as in ViT/DeiT: truncated normal (std 0.02) for
    linear weights, class token and position embedding; zero biases; LayerNorm as identity; the patch
    embedding conv keeps PyTorch's default.

    Args:
        num_classes: Number of output logits.
        in_channels: Channels of the input images.
        image_size: Height (= width) of the input images.
        patch_size: Side of the square patches; must divide ``image_size``.
        dim: Token dimension.
        depth: Number of transformer blocks.
        heads: Attention heads; must divide ``dim``.
        mlp_ratio: Hidden width of the block MLPs relative to ``dim``.

    Raises:
        ValueError: If ``patch_size`` does not divide ``image_size`` or ``heads`` does not divide ``dim``.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        image_size: int,
        patch_size: int,
        dim: int,
        depth: int,
        heads: int,
        mlp_ratio: float,
    ):
        super().__init__()
        for name, value in (("patch_size", patch_size), ("dim", dim), ("depth", depth), ("heads", heads)):
            check_positive_int(name, value)
        if image_size % patch_size:
            divisors = [p for p in range(1, image_size + 1) if image_size % p == 0]
            raise ValueError(
                f"patch_size={patch_size} does not divide image_size={image_size}; "
                f"valid patch sizes: {divisors}"
            )
        check_positive_number("mlp_ratio", mlp_ratio)
        tokens = (image_size // patch_size) ** 2
        self.patch_embed = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens + 1, dim))
        self.blocks = nn.Sequential(*(TransformerBlock(dim, heads, mlp_ratio) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.classifier = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map images ``(N, C, H, W)`` to logits ``(N, num_classes)``."""
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1) + self.pos_embed
        return self.classifier(self.norm(self.blocks(tokens))[:, 0])


@register_model("vit_tiny")
def vit_tiny(
    num_classes: int,
    in_channels: int,
    image_size: int,
    *,
    patch_size: int | None = None,
    dim: int = 192,
    depth: int = 12,
    heads: int = 3,
    mlp_ratio: float = 4.0,
) -> VisionTransformer:
    """ViT-Tiny (DeiT-Ti sizes: dim 192, depth 12, 3 heads).

    ``patch_size=None`` picks :func:`default_patch_size`; see :class:`VisionTransformer` for the options.
    """
    if patch_size is None:
        patch_size = default_patch_size(image_size)
    return VisionTransformer(num_classes, in_channels, image_size, patch_size, dim, depth, heads, mlp_ratio)

"""The 1×1 convolution as a batched matrix product, shared by the factorized training and export layers.

On CPU, oneDNN's convolution is slow for the few channels of a low-rank factor: a 16→3 1×1 convolution of a
256×16×32×32 batch takes about 21 ms, the equal matrix product 1.5 ms (``benchmarks/bench_export_latency``
measures the effect on whole models).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["pointwise_conv2d"]


def pointwise_conv2d(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.conv2d(x, weight[:, :, None, None], bias)``: a 1×1 convolution, stride 1, no padding, one group.

    Contiguous (NCHW) 4-d inputs are multiplied by ``weight`` over the channel dimension with ``torch.bmm``;
    other inputs (channels-last, where oneDNN is fast, or unbatched) go through the convolution.

    Args:
        x: Input of shape ``(N, C_in, H, W)`` (or anything ``F.conv2d`` accepts).
        weight: The ``(C_out, C_in)`` matrix of the 1×1 kernel.
        bias: Optional ``(C_out,)`` bias.

    Returns:
        The output, ``(N, C_out, H, W)``.
    """
    if x.dim() == 4 and x.is_contiguous():
        batch, channels, height, width = x.shape
        # bmm on the expanded weight: torch.matmul would fold the batch into a transposed copy of the input
        # whenever the weight requires grad, which costs more than the product itself.
        out = torch.bmm(weight.expand(batch, -1, -1), x.view(batch, channels, height * width))
        out = out.view(batch, weight.shape[0], height, width)
        return out if bias is None else out + bias.view(1, -1, 1, 1)
    return F.conv2d(x, weight[:, :, None, None], bias)

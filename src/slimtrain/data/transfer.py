"""Host-to-device copies that do not make the host wait for the device.

A plain ``tensor.to("cuda")`` from ordinary (pageable) host memory synchronises the host with the device's
stream, so a training step that copies a few random offsets to the GPU would stall on all the work queued
before it. Copies from page-locked (pinned) memory with ``non_blocking=True`` are queued instead; torch's
pinned-memory allocator keeps the staging block alive until the copy has run.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["indexed_device", "to_device"]


def indexed_device(device: torch.device | str) -> torch.device:
    """``device`` as a ``torch.device``, with the current CUDA device's index filled in for a bare ``"cuda"``.

    Batches and data are compared by device, and ``torch.device("cuda") != torch.device("cuda", 0)``.
    """
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def to_device(tensor: Tensor, device: torch.device) -> Tensor:
    """``tensor`` on ``device``, copied through pinned memory without blocking when it leaves the host.

    Args:
        tensor: any tensor; one already on ``device`` is returned as it is.
        device: the target device (see :func:`indexed_device`).
    """
    if tensor.device == device:
        return tensor
    if tensor.device.type == "cpu" and device.type == "cuda":
        staged = tensor if tensor.is_pinned() else tensor.pin_memory()
        return staged.to(device, non_blocking=True)
    return tensor.to(device)

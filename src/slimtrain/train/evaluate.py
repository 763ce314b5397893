"""Accuracy and loss of a model on a dataset, in eval mode, without gradients."""

from __future__ import annotations

import torch
from torch import nn

from slimtrain._model_io import call_model, eval_mode, logits_of, move_inputs
from slimtrain.data import ArrayDataset, BatchLoader


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: ArrayDataset,
    *,
    batch_size: int = 512,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> dict[str, float]:
    """Top-1 accuracy and mean cross-entropy of ``model`` on ``dataset``.

    The model is put in eval mode for the measurement; every sub-module gets its own mode back after.

    Returns:
        ``{"accuracy", "loss", "samples"}``; accuracy and loss are NaN for an empty dataset.
    """
    if len(dataset) == 0:
        return {"accuracy": float("nan"), "loss": float("nan"), "samples": 0}
    correct, loss_sum = 0, 0.0
    with eval_mode(model):
        for inputs, targets in BatchLoader(dataset, batch_size, shuffle=False):
            inputs, targets = move_inputs(inputs, device, dtype), targets.to(device)
            logits = logits_of(call_model(model, inputs))
            loss_sum += nn.functional.cross_entropy(logits, targets, reduction="sum").item()
            correct += (logits.argmax(dim=1) == targets).sum().item()
    return {"accuracy": correct / len(dataset), "loss": loss_sum / len(dataset), "samples": len(dataset)}

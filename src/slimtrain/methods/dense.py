"""Plain dense training (SGD with momentum and weight decay, or Adam/AdamW), compressed after training."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, model_validator
from torch import nn

from slimtrain.compress.magnitude import layerwise_magnitude_masks
from slimtrain.compress.masks import apply_masks
from slimtrain.train.method import Method, register_method


class DenseOptions(BaseModel):
    """How ``unstructured`` compression prunes the dense model.

    Attributes:
        unstructured: ``global`` magnitude pruning over all conv + linear weights (default), or ``per_layer``:
            the same fraction of every layer (NN-BCD's pruning baseline, docs/nnbcd.md#baselines).
        keep_output_dense: With ``per_layer``, leave the last conv/linear layer (the classifier) unpruned, as
            NN-BCD does.
    """

    model_config = ConfigDict(extra="forbid")

    unstructured: Literal["global", "per_layer"] = "global"
    keep_output_dense: bool = False

    @model_validator(mode="after")
    def _output_needs_per_layer(self) -> DenseOptions:
        if self.keep_output_dense and self.unstructured != "per_layer":
            raise ValueError("'keep_output_dense' needs 'unstructured: per_layer'")
        return self


@register_method
class DenseTraining(Method):
    """Dense training with the recipe's optimizer; any compression level is chosen after training.

    This is the baseline every compression-aware method is compared with: train once with ordinary weight
    decay, then compress the one checkpoint at each level (global or per-layer magnitude pruning, L1 filter
    pruning or SVD truncation) without retraining.
    """

    name = "dense"
    Options = DenseOptions

    def compress(
        self, model: nn.Module, structure: str, level: float, example_inputs: torch.Tensor
    ) -> nn.Module:
        """The standard compression, except ``unstructured`` with ``per_layer``: layerwise magnitude masks."""
        if structure != "unstructured" or self.options.unstructured == "global":
            return super().compress(model, structure, level, example_inputs)
        masks = layerwise_magnitude_masks(model, level)
        if self.options.keep_output_dense:
            del masks[list(masks)[-1]]  # population order follows the parameters: the classifier is last
        return apply_masks(model, masks)

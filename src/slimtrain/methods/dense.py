"""Plain dense training (SGD with momentum and weight decay, or Adam/AdamW), compressed after training."""

from __future__ import annotations

from slimtrain.train.method import Method, register_method


@register_method
class DenseTraining(Method):
    """Dense training with the recipe's optimizer; any compression level is chosen after training.

    This is the baseline every compression-aware method is compared with: train once with ordinary weight
    decay, then compress the one checkpoint at each level (global magnitude pruning, L1 filter pruning or
    SVD truncation) without retraining.
    """

    name = "dense"

"""The protocol a layer that stores only its weight's non-zeros implements so that the metrics count it.

A sparse-storage layer (e.g. :class:`~slimtrain.layers.SparseLinear`, CSR) stands in for one dense layer
whose weight had exact zeros: its *dense* count is that weight's size, its *stored* count the non-zeros it
keeps (docs/metrics.md#ratios: N_stored = NNZ for sparse models; index arrays are memory, not parameters).
Counted this way, a model converted to sparse storage has the same parameter counts, sparsities and effective
MACs as the masked model it came from.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor


@runtime_checkable
class SparseWeightLayer(Protocol):
    """A module that replaces one dense Linear layer by the stored non-zeros of its weight.

    Contract for implementers:

    - ``values`` is the parameter holding the stored weight entries; it is counted as the layer's
      ``weight`` (role ``weight``, so it belongs to the ``prunable`` population) under the name
      ``<layer>.weight``, which keeps per-layer keys equal to the dense model's.
    - ``dense_weight_shape()`` returns the shape of the dense weight it stands for,
      ``(out_features, in_features)``; the layer also has ``in_features``, so its dense MACs per call are
      ``in_features`` × output elements, as for ``nn.Linear``.
    - ``dense_weight()`` returns that dense weight (zeros where nothing is stored); the effective-sparsity
      analysis of ReLU MLPs reads it.
    - Other parameters (``bias``) are counted as for a plain module.
    """

    values: Tensor
    in_features: int

    def dense_weight_shape(self) -> tuple[int, ...]:
        """Return the shape of the dense weight this layer stores sparsely."""
        ...

    def dense_weight(self) -> Tensor:
        """Return the dense weight, of shape ``dense_weight_shape()``."""
        ...

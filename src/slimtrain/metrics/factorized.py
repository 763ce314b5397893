"""The protocol a factorized (low-rank) layer implements so that the metrics count it correctly.

A factorized layer stands in for one dense Conv or Linear layer (docs/metrics.md#populations): its *stored*
count is the size of the tensors it really holds (its parameters), its *dense* count is the size of the layer
it replaces. Only the second number cannot be read off the module, hence the one-method protocol.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class FactorizedLayer(Protocol):
    """A module that replaces one dense Conv/Linear layer by factors (SVD pair, Tucker, tensor train).

    Contract for implementers:

    - ``dense_parameter_count()`` returns the number of parameters of the dense layer it replaces,
      **bias included** (e.g. ``C_out·C_in·k_h·k_w + C_out`` for a biased conv).
    - If the layer has a bias, it is exposed as the attribute ``bias`` (an ``nn.Parameter`` or ``None``),
      as ``nn.Conv2d`` and ``nn.Linear`` do; the bias is stored as is and is not part of the ``prunable``
      population. All other parameters of the module (and of its submodules) are its factors.
    - Its forward pass runs the factorized computation; its MACs are counted as executed (through
      ``torch.utils.flop_counter.FlopCounterMode``), so no MAC method is required. Dense MACs of a
      factorized model come from the dense ``reference`` model passed to :func:`summarize`.

    - Optional: ``eval_parameter_count() -> int`` (bias excluded), the count of the deployed inference
      layer when it differs from the parameters held, e.g. ``(n + m)·r`` for a layer that trains U, S, V
      but is deployed as K = US and L = V. Only the DLRT c.r. conventions use it (docs/metrics.md#ratios).

    - Optional: a ``ranks`` attribute (an int or a tuple of ints), reported as ``ranks_per_layer``.

    - Optional: ``macs_as_dense = True`` on a layer that stands for a Linear (``in_features``,
      ``out_features``) and rebuilds the dense weight in every forward pass (storage compression only):
      its MACs are then counted as the dense product, in·out per token, not as executed.

    The counting never descends into a factorized layer: Conv/Linear submodules it uses internally are
    counted as its factors, not as separate layers.
    """

    def dense_parameter_count(self) -> int:
        """Return the parameter count of the dense layer this one replaces, bias included."""
        ...

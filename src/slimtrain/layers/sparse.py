"""A linear layer whose weight is stored in compressed sparse row (CSR) form."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from slimtrain.layers.specs import register_layer_type

_CSR_BETA = "Sparse CSR tensor support is in beta"
"""Start of torch's warning on the first CSR tensor of a process, which a user of the layer cannot act on."""


@contextlib.contextmanager
def _quiet_csr() -> Iterator[None]:
    """Silence torch's CSR "beta" warning, and only it, inside the block."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_CSR_BETA, category=UserWarning)
        yield


class SparseLinear(nn.Module):
    """``y = x Wᵀ + b`` with W held as CSR (``crow_indices``, ``col_indices`` buffers; ``values`` parameter).

    Stored entries: ``nnz`` values plus ``nnz + out_features + 1`` int64 indices. Whether it is faster than
    a dense ``nn.Linear`` depends on sparsity, size and batch; see ``docs/export.md`` for measurements.

    Args:
        in_features: Input features.
        out_features: Output features.
        nnz: Number of stored (non-zero) weight entries.
        bias: Whether the layer has a bias.
    """

    def __init__(self, in_features: int, out_features: int, nnz: int, *, bias: bool = True):
        super().__init__()
        self.in_features, self.out_features, self.nnz = in_features, out_features, nnz
        self.register_buffer("crow_indices", torch.zeros(out_features + 1, dtype=torch.int64))
        self.register_buffer("col_indices", torch.zeros(nnz, dtype=torch.int64))
        self.values = nn.Parameter(torch.zeros(nnz))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def dense_weight_shape(self) -> tuple[int, int]:
        """Return ``(out_features, in_features)``, the shape of the weight stored sparsely.

        With ``values`` this makes the layer a :class:`~slimtrain.metrics.SparseWeightLayer`: the metrics
        count it like the masked ``nn.Linear`` it came from.
        """
        return (self.out_features, self.in_features)

    def dense_weight(self) -> torch.Tensor:
        """Return the weight as a dense tensor of shape (out_features, in_features)."""
        with _quiet_csr():
            return self.weight_csr().to_dense()

    @property
    def weight(self) -> torch.Tensor:
        """The dense weight, :meth:`dense_weight`, rebuilt on each read (not a parameter: ``values`` is).

        It exists so that code reading the replaced linear's ``weight`` (its dtype, device or values) keeps
        working; read-only.
        """
        return self.dense_weight()

    def weight_csr(self) -> torch.Tensor:
        """Return the weight as a ``torch.sparse_csr`` tensor of shape (out_features, in_features)."""
        with _quiet_csr():
            return torch.sparse_csr_tensor(
                self.crow_indices,
                self.col_indices,
                self.values,
                (self.out_features, self.in_features),
                check_invariants=False,
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the layer to ``x`` of shape (..., in_features)."""
        flat = x.reshape(-1, self.in_features)
        with _quiet_csr():
            out = (self.weight_csr() @ flat.T).T
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features)

    def config(self) -> dict[str, Any]:
        """Return the constructor arguments (JSON-serialisable)."""
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "nnz": self.nnz,
            "bias": self.bias is not None,
        }

    def to_dense(self) -> nn.Linear:
        """Return an equivalent dense ``nn.Linear``."""
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None).to(
            device=self.values.device, dtype=self.values.dtype
        )
        with torch.no_grad():
            linear.weight.copy_(self.dense_weight())
            if self.bias is not None:
                linear.bias.copy_(self.bias)
        return linear

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> SparseLinear:
        """Store ``linear``'s weight (its exact zeros dropped) in CSR form; ``linear`` is left unchanged."""
        with _quiet_csr():
            csr = linear.weight.detach().to_sparse_csr()
        layer = cls(
            linear.in_features, linear.out_features, csr.values().numel(), bias=linear.bias is not None
        )
        layer = layer.to(device=linear.weight.device, dtype=linear.weight.dtype)
        with torch.no_grad():
            layer.crow_indices.copy_(csr.crow_indices())
            layer.col_indices.copy_(csr.col_indices())
            layer.values.copy_(csr.values())
            if linear.bias is not None:
                layer.bias.copy_(linear.bias)
        return layer

    def extra_repr(self) -> str:
        """Summarise the layer's shape and stored entries."""
        return f"in_features={self.in_features}, out_features={self.out_features}, nnz={self.nnz}"


register_layer_type("slimtrain.SparseLinear", SparseLinear, v1_name="SparseLinear")

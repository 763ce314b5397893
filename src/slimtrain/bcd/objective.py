"""The penalized NN-BCD objective Φ and its terms (docs/nnbcd.md; Li et al. 2023, Zeng et al. 2019).

Φ = ½‖V_L − Y‖² + (γ/2)Σ_{i<L}‖V_i − σ(U_i)‖² + (γ/2)‖V_L − U_L‖² + (ρ/2)Σ_i‖U_i − W_iV_{i−1}‖²
    + (τ/2)Σ_{i∈𝒞}‖W_i − T_i‖²,
logged exactly as defined (the reference code's log weights the data term by γ/2 instead;
docs/nnbcd.md#defaults-and-faithful-flags).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class ObjectiveTerms:
    """The five terms of Φ (plain floats).

    Attributes:
        data: ½‖V_L − Y‖².
        activation: (γ/2)Σ_{i<L}‖V_i − σ(U_i)‖².
        output: (γ/2)‖V_L − U_L‖².
        linear: (ρ/2)Σ_i‖U_i − W_iV_{i−1}‖².
        compression: (τ/2)Σ_{i∈𝒞}‖W_i − T_i‖².
    """

    data: float
    activation: float
    output: float
    linear: float
    compression: float

    @property
    def total(self) -> float:
        """Φ, the sum of the terms."""
        return self.data + self.activation + self.output + self.linear + self.compression

    def as_dict(self) -> dict[str, float]:
        """Terms and total as a dictionary."""
        return {**asdict(self), "total": self.total}


def _sq(x: torch.Tensor) -> float:
    # Accumulate in float64 so that float32 runs do not see rounding noise as a rise of Φ.
    return float(torch.sum(x * x, dtype=torch.float64))


def penalized_objective(
    *,
    targets: torch.Tensor,
    activations: Sequence[torch.Tensor],
    relu_preactivations: Sequence[torch.Tensor],
    preactivations: Sequence[torch.Tensor],
    linear_maps: Sequence[torch.Tensor],
    weights: Sequence[torch.Tensor],
    copies: Mapping[int, torch.Tensor],
    gamma: float,
    rho: float,
    tau: float,
) -> ObjectiveTerms:
    """Evaluate Φ from the block variables.

    Args:
        targets: Y, shape K × N.
        activations: V_1 … V_L (V_L is the output block).
        relu_preactivations: σ(U_1) … σ(U_{L−1}) in the layout of the matching V_i.
        preactivations: U_1 … U_L.
        linear_maps: W_iV_{i−1} for every layer, in the layout of the matching U_i.
        weights: W_1 … W_L.
        copies: Layer index (0-based) → compressed copy T_i.
        gamma: Activation/output coupling γ.
        rho: Linear coupling ρ.
        tau: Compression coupling τ.

    Returns:
        The terms of Φ.
    """
    last = len(activations) - 1
    return ObjectiveTerms(
        data=0.5 * _sq(activations[last] - targets),
        activation=0.5 * gamma * sum(_sq(activations[i] - relu_preactivations[i]) for i in range(last)),
        output=0.5 * gamma * _sq(activations[last] - preactivations[last]),
        linear=0.5 * rho * sum(_sq(u - wv) for u, wv in zip(preactivations, linear_maps, strict=True)),
        compression=0.5 * tau * sum(_sq(weights[i] - t) for i, t in copies.items()),
    )

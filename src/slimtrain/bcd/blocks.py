"""Closed-form block minimisers of the NN-BCD sweep (docs/nnbcd.md).

Li et al. 2023 (arXiv:2303.06815), with the updates of Zeng et al., ICML 2019.

Layout: data are columns (X is d₀ × N), W_i is d_i × d_{i−1}. Each function returns the exact minimiser of
Φ over its block, plus the proximal term (α/2)‖· − old‖² where the method has one (V_L, U_i for i < L, W_i).
"""

from __future__ import annotations

import torch

from slimtrain.bcd.linalg import solve_shifted_gram, solve_spd_left, solve_spd_right
from slimtrain.bcd.relu_prox import relu_prox


def update_output_activation(
    targets: torch.Tensor, preactivation: torch.Tensor, previous: torch.Tensor, gamma: float, alpha: float
) -> torch.Tensor:
    """Step 1: V_L = argmin ½‖V − Y‖² + (γ/2)‖V − U_L‖² + (α/2)‖V − V_L^old‖².

    Args:
        targets: Y (K × N).
        preactivation: U_L.
        previous: V_L^old.
        gamma: γ.
        alpha: α.

    Returns:
        The new V_L.
    """
    return (targets + gamma * preactivation + alpha * previous) / (1.0 + gamma + alpha)


def update_output_preactivation(
    activation: torch.Tensor, linear_map: torch.Tensor, gamma: float, rho: float
) -> torch.Tensor:
    """Step 2: U_L = argmin (γ/2)‖V_L − U‖² + (ρ/2)‖U − W_LV_{L−1}‖² (no proximal term).

    Args:
        activation: The new V_L.
        linear_map: W_L V_{L−1}.
        gamma: γ.
        rho: ρ.

    Returns:
        The new U_L.
    """
    return (gamma * activation + rho * linear_map) / (gamma + rho)


def update_weight(
    previous: torch.Tensor,
    preactivation: torch.Tensor,
    inputs: torch.Tensor,
    rho: float,
    alpha: float,
    tau: float = 0.0,
    copy: torch.Tensor | None = None,
    gram: torch.Tensor | None = None,
) -> torch.Tensor:
    """Steps 3 and 6: W = (αW^old + τT + ρUV_{prev}ᵀ)((α + τ)I + ρV_{prev}V_{prev}ᵀ)⁻¹.

    The minimiser of (ρ/2)‖U − WV_{prev}‖² + (τ/2)‖W − T‖² + (α/2)‖W − W^old‖², solved from the right by
    Cholesky. Without a copy (uncompressed or output layer) τ is ignored.

    Args:
        previous: W^old (d_out × d_in).
        preactivation: U (d_out × N).
        inputs: V_{prev}, the previous sweep's input activations (d_in × N).
        rho: ρ.
        alpha: α.
        tau: τ, used only with ``copy``.
        copy: The compressed copy T (𝒯(G^old) or W̃^old), or ``None``.
        gram: V_{prev}V_{prev}ᵀ if already known (the fixed input of the first layer), else computed.

    Returns:
        The new W.
    """
    shift = alpha
    rhs = alpha * previous + rho * (preactivation @ inputs.T)
    if copy is not None:
        shift += tau
        rhs = rhs + tau * copy
    system = rho * (inputs @ inputs.T if gram is None else gram)
    system.diagonal().add_(shift)
    return solve_spd_right(rhs, system)


def update_activation(
    next_weight: torch.Tensor,
    next_preactivation: torch.Tensor,
    relu_preactivation: torch.Tensor,
    rho: float,
    gamma: float,
) -> torch.Tensor:
    """Step 4: V_i = (ρW_{i+1}ᵀW_{i+1} + γI)⁻¹(ρW_{i+1}ᵀU_{i+1} + γσ(U_i^old)) (no proximal term).

    Solved from the left; the Woodbury identity is used when W_{i+1} is wider than tall.

    Args:
        next_weight: The new W_{i+1}.
        next_preactivation: The new U_{i+1}.
        relu_preactivation: σ(U_i^old), in the layout of V_i.
        rho: ρ.
        gamma: γ.

    Returns:
        The new V_i.
    """
    rhs = rho * (next_weight.T @ next_preactivation) + gamma * relu_preactivation
    return solve_shifted_gram(next_weight, rhs, rho, gamma)


def update_preactivation(
    activation: torch.Tensor,
    linear_map: torch.Tensor,
    previous: torch.Tensor,
    gamma: float,
    rho: float,
    alpha: float,
) -> torch.Tensor:
    """Step 5: U_i = argmin (γ/2)‖V_i − σ(U)‖² + (ρ/2)‖U − W_iV_{i−1}‖² + (α/2)‖U − U_i^old‖².

    The exact ReLU prox with c = (ρW_iV_{i−1} + αU_i^old)/(ρ + α) and g = (ρ + α)/γ
    (docs/nnbcd.md#the-relu-prox).

    Args:
        activation: The new V_i, in the layout of U_i.
        linear_map: W_i^old V_{i−1}^old.
        previous: U_i^old.
        gamma: γ.
        rho: ρ.
        alpha: α.

    Returns:
        The new U_i.
    """
    centre = (rho * linear_map + alpha * previous) / (rho + alpha)
    return relu_prox(activation, centre, (rho + alpha) / gamma)


def update_conv_weight(
    previous: torch.Tensor,
    preactivation: torch.Tensor,
    patches: torch.Tensor,
    patches_gram: torch.Tensor,
    rho: float,
    alpha: float,
) -> torch.Tensor:
    """docs/nnbcd.md: W₁ = (ρX̄ᵀX̄ + αI)⁻¹(ρX̄ᵀU₁ + αW₁^old), row-major layout, solved from the left.

    Args:
        previous: W₁^old (k²C × S).
        preactivation: U₁ ((N·P) × S).
        patches: X̄ ((N·P) × k²C).
        patches_gram: X̄ᵀX̄ (constant over the run).
        rho: ρ.
        alpha: α.

    Returns:
        The new W₁.
    """
    system = rho * patches_gram
    system.diagonal().add_(alpha)
    return solve_spd_left(system, rho * (patches.T @ preactivation) + alpha * previous)

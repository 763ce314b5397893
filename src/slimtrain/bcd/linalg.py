"""Symmetric positive definite solves used by the NN-BCD block updates (docs/nnbcd.md).

Every linear system of NN-BCD is SPD: (αI + ρVVᵀ), (ρWᵀW + γI) and (ρX̄ᵀX̄ + αI). They are solved by a
Cholesky factorisation, never by an explicit inverse. If the factorisation fails in finite precision a
small, growing multiple of the mean diagonal is added (jitter) before giving up.
"""

from __future__ import annotations

import torch

_JITTER_STEPS = 6


def cholesky_factor(matrix: torch.Tensor) -> torch.Tensor:
    """Lower Cholesky factor of an SPD matrix, with a jitter fallback.

    Args:
        matrix: Square symmetric positive definite matrix.

    Returns:
        The lower-triangular factor ``L`` with ``L Lᵀ ≈ matrix``.

    Raises:
        torch.linalg.LinAlgError: If the matrix is not positive definite even after adding jitter up to
            1e-4 times its mean diagonal.
    """
    factor, info = torch.linalg.cholesky_ex(matrix)
    if int(info) == 0:
        return factor
    scale = matrix.diagonal().abs().mean().clamp_min(torch.finfo(matrix.dtype).tiny)
    eye = torch.eye(matrix.shape[0], dtype=matrix.dtype, device=matrix.device)
    for step in range(_JITTER_STEPS):
        jitter = scale * 10.0 ** (-9 + step)
        factor, info = torch.linalg.cholesky_ex(matrix + jitter * eye)
        if int(info) == 0:
            return factor
    raise torch.linalg.LinAlgError(
        f"matrix of size {matrix.shape[0]} is not positive definite even with jitter {float(jitter):.3g}"
    )


def solve_spd_left(matrix: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """Solve ``matrix @ X = rhs`` for SPD ``matrix``.

    Args:
        matrix: SPD matrix of size n×n.
        rhs: Right-hand side of shape n×k.

    Returns:
        The solution X of shape n×k.
    """
    return torch.cholesky_solve(rhs, cholesky_factor(matrix))


def solve_spd_right(rhs: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Solve ``X @ matrix = rhs`` for SPD ``matrix`` (the right-multiplied weight update of docs/nnbcd.md).

    Args:
        rhs: Right-hand side of shape k×n.
        matrix: SPD matrix of size n×n.

    Returns:
        The solution X of shape k×n.
    """
    # matrix is symmetric, so X·A = B  ⇔  A·Xᵀ = Bᵀ.
    return solve_spd_left(matrix, rhs.T).T


def solve_shifted_gram(weight: torch.Tensor, rhs: torch.Tensor, rho: float, gamma: float) -> torch.Tensor:
    """Solve ``(ρ WᵀW + γ I) X = rhs``, the activation update system of docs/nnbcd.md#one-sweep step 4.

    When W has fewer rows m than columns n, the Woodbury identity
    ``(ρWᵀW + γI)⁻¹ = (I − Wᵀ(γ/ρ·I + WWᵀ)⁻¹W)/γ`` reduces the factorisation from n×n to m×m (e.g. to the
    output width for the last hidden layer).

    Args:
        weight: W of shape m×n.
        rhs: Right-hand side of shape n×k.
        rho: Linear coupling weight ρ > 0.
        gamma: Activation coupling weight γ > 0.

    Returns:
        The solution X of shape n×k.
    """
    rows, cols = weight.shape
    if rows < cols:
        small = weight @ weight.T
        small.diagonal().add_(gamma / rho)
        correction = weight.T @ solve_spd_left(small, weight @ rhs)
        return (rhs - correction) / gamma
    system = rho * (weight.T @ weight)
    system.diagonal().add_(gamma)
    return solve_spd_left(system, rhs)

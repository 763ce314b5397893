"""Each closed-form block update is the exact minimiser of its subproblem (spec nnbcd.md §2.2, §7.2, §7.8)."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from slimtrain.bcd.blocks import (
    update_activation,
    update_conv_weight,
    update_output_activation,
    update_output_preactivation,
    update_preactivation,
    update_weight,
)

DT = torch.float64
dims = st.integers(1, 12)
penalty = st.floats(0.05, 20.0)


def _rand(*shape, gen):
    return torch.randn(*shape, generator=gen, dtype=DT)


def _grad_at(fn, x):
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(fn(x), x)
    return grad


def _sq(x):
    return (x * x).sum()


@settings(max_examples=15)
@given(k=dims, n=dims, gamma=penalty, alpha=penalty, seed=st.integers(0, 999))
def test_output_activation_has_zero_gradient(k, n, gamma, alpha, seed):
    """V_L zeroes the gradient of ½‖V−Y‖² + (γ/2)‖V−U_L‖² + (α/2)‖V−V_old‖²."""
    gen = torch.Generator().manual_seed(seed)
    y, u, old = _rand(k, n, gen=gen), _rand(k, n, gen=gen), _rand(k, n, gen=gen)
    v = update_output_activation(y, u, old, gamma, alpha)
    grad = _grad_at(lambda x: 0.5 * _sq(x - y) + 0.5 * gamma * _sq(x - u) + 0.5 * alpha * _sq(x - old), v)
    assert grad.abs().max() < 1e-10


@settings(max_examples=15)
@given(k=dims, n=dims, gamma=penalty, rho=penalty, seed=st.integers(0, 999))
def test_output_preactivation_has_zero_gradient(k, n, gamma, rho, seed):
    """U_L zeroes the gradient of (γ/2)‖V_L−U‖² + (ρ/2)‖U−W_LV_{L−1}‖²."""
    gen = torch.Generator().manual_seed(seed)
    v, wv = _rand(k, n, gen=gen), _rand(k, n, gen=gen)
    u = update_output_preactivation(v, wv, gamma, rho)
    grad = _grad_at(lambda x: 0.5 * gamma * _sq(v - x) + 0.5 * rho * _sq(x - wv), u)
    assert grad.abs().max() < 1e-10


@settings(max_examples=20)
@given(
    d_out=dims, d_in=dims, n=dims, rho=penalty, alpha=penalty, tau=st.floats(0.0, 10.0),
    with_copy=st.booleans(), seed=st.integers(0, 999),
)  # fmt: skip
def test_weight_update_is_exact_with_sufficient_decrease(d_out, d_in, n, rho, alpha, tau, with_copy, seed):
    """W solves the right-multiplied system to 1e-10 and is optimal with sufficient decrease.

    W((α+τ)I + ρVVᵀ) = αW_old + τT + ρUVᵀ; the block gradient vanishes; h(W) = (ρ/2)‖U−WV‖² + (τ/2)‖W−T‖²
    decreases by at least (α/2)‖ΔW‖².
    """
    gen = torch.Generator().manual_seed(seed)
    old, u, v = _rand(d_out, d_in, gen=gen), _rand(d_out, n, gen=gen), _rand(d_in, n, gen=gen)
    copy = _rand(d_out, d_in, gen=gen) if with_copy else None
    t = tau if with_copy else 0.0
    w = update_weight(old, u, v, rho, alpha, tau, copy)
    lhs = w @ ((alpha + t) * torch.eye(d_in, dtype=DT) + rho * v @ v.T)
    rhs = alpha * old + rho * u @ v.T + (t * copy if with_copy else 0)
    assert (lhs - rhs).abs().max() < 1e-10 * max(1.0, rhs.abs().max())

    def h(x):
        return 0.5 * rho * _sq(u - x @ v) + (0.5 * t * _sq(x - copy) if with_copy else 0)

    grad = _grad_at(lambda x: h(x) + 0.5 * alpha * _sq(x - old), w)
    assert grad.abs().max() < 1e-9 * max(1.0, rhs.abs().max())
    assert h(old) - h(w) >= 0.5 * alpha * _sq(w - old) - 1e-10 * max(1.0, float(h(old)))


@settings(max_examples=20)
@given(d=dims, m=dims, n=dims, gamma=penalty, rho=penalty, seed=st.integers(0, 999))
def test_activation_update_has_zero_gradient(d, m, n, gamma, rho, seed):
    """V_i zeroes the gradient of (γ/2)‖V−σ(U_i)‖² + (ρ/2)‖U_{i+1}−W_{i+1}V‖².

    Both the direct path and the Woodbury path (W_{i+1} wider than tall) are drawn.
    """
    gen = torch.Generator().manual_seed(seed)
    w, u_next, relu_u = _rand(m, d, gen=gen), _rand(m, n, gen=gen), _rand(d, n, gen=gen).clamp_min(0)
    v = update_activation(w, u_next, relu_u, rho, gamma)
    grad = _grad_at(lambda x: 0.5 * gamma * _sq(x - relu_u) + 0.5 * rho * _sq(u_next - w @ x), v)
    scale = max(1.0, float((rho * w.T @ u_next).abs().max()), float(gamma * relu_u.abs().max()))
    assert grad.abs().max() < 1e-9 * scale


@settings(max_examples=20)
@given(d=dims, n=dims, gamma=penalty, rho=penalty, alpha=penalty, seed=st.integers(0, 999))
def test_preactivation_update_is_not_improved_by_perturbations(d, n, gamma, rho, alpha, seed):
    """No perturbation of U_i (joint or per entry) lowers (γ/2)‖V−σ(U)‖² + (ρ/2)‖U−WV‖² + (α/2)‖U−U_old‖²."""
    gen = torch.Generator().manual_seed(seed)
    v, wv, old = _rand(d, n, gen=gen).clamp_min(0), _rand(d, n, gen=gen), _rand(d, n, gen=gen)

    def entrywise(x):
        return (
            0.5 * gamma * (v - x.clamp_min(0)) ** 2 + 0.5 * rho * (x - wv) ** 2 + 0.5 * alpha * (x - old) ** 2
        )

    u = update_preactivation(v, wv, old, gamma, rho, alpha)
    best = entrywise(u)
    for scale in (1e-6, 1e-3, 1e-1, 1.0, 5.0):
        for _ in range(5):
            trial = u + scale * _rand(d, n, gen=gen)
            assert (entrywise(trial) >= best - 1e-12).all()
    # The opposite ReLU branch (flip the sign region) is never better either.
    assert (entrywise(-u) >= best - 1e-12).all()


@settings(max_examples=15)
@given(
    rows=st.integers(5, 40), p=st.integers(1, 9), s=dims, rho=penalty, alpha=penalty, seed=st.integers(0, 999)
)
def test_conv_weight_update_has_zero_gradient(rows, p, s, rho, alpha, seed):
    """W₁ zeroes the gradient of (ρ/2)‖U₁−X̄W₁‖² + (α/2)‖W₁−W₁_old‖² (left-multiplied layout, spec §2.6)."""
    gen = torch.Generator().manual_seed(seed)
    patches, u, old = _rand(rows, p, gen=gen), _rand(rows, s, gen=gen), _rand(p, s, gen=gen)
    w = update_conv_weight(old, u, patches, patches.T @ patches, rho, alpha)
    grad = _grad_at(lambda x: 0.5 * rho * _sq(u - patches @ x) + 0.5 * alpha * _sq(x - old), w)
    assert grad.abs().max() < 1e-9 * max(1.0, float((rho * patches.T @ u).abs().max()))

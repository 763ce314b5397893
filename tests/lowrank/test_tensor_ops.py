"""Tucker algebra: unfolding, HOSVD, augmentation and truncation rules (spec tdlrt.md §2.4–§2.5, §7)."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from slimtrain.algebra.tucker import (
    complete_orthonormal,
    fold,
    hosvd,
    mode_product,
    multi_mode_product,
    rank_from_singular_values,
    tucker_to_tensor,
    unfold,
)
from slimtrain.lowrank.basis_rules import orthonormal_augmentation

F64 = torch.float64


def _orthonormal(n: int, r: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(n, r, dtype=F64))
    return q


def _max_ortho_error(u: torch.Tensor) -> float:
    return float((u.T @ u - torch.eye(u.shape[1], dtype=F64)).abs().max())


@given(st.lists(st.integers(1, 4), min_size=2, max_size=4), st.data())
def test_fold_inverts_unfold_and_mode_product_matches_einsum(shape, data):
    """fold(unfold(T, i), i) == T, and T ×_i A equals the einsum definition."""
    tensor = torch.randn(shape, dtype=F64)
    mode = data.draw(st.integers(0, len(shape) - 1))
    assert torch.equal(fold(unfold(tensor, mode), mode, shape), tensor)
    matrix = torch.randn(3, shape[mode], dtype=F64)
    letters = "abcd"[: len(shape)]
    expected = torch.einsum(
        f"{letters},z{letters[mode]}->{letters.replace(letters[mode], 'z')}", tensor, matrix
    )
    assert torch.allclose(mode_product(tensor, matrix, mode), expected)


def test_hosvd_exact_at_full_rank_and_on_exact_multilinear_rank():
    """HOSVD reconstructs exactly at full ranks, and a tensor of multilinear rank (2, 3, 2) at those ranks."""
    tensor = torch.randn(4, 5, 3, dtype=F64)
    core, factors = hosvd(tensor, tensor.shape)
    assert torch.allclose(tucker_to_tensor(core, factors), tensor, atol=1e-12)
    low = tucker_to_tensor(
        torch.randn(2, 3, 2, dtype=F64), [torch.randn(n, r, dtype=F64) for n, r in [(4, 2), (5, 3), (3, 2)]]
    )
    core, factors = hosvd(low, (2, 3, 2))
    assert torch.allclose(tucker_to_tensor(core, factors), low, atol=1e-10)
    assert all(_max_ortho_error(u) < 1e-12 for u in factors)


def test_complete_orthonormal_keeps_given_columns():
    """The completed basis is orthonormal and starts with the given columns verbatim."""
    basis = _orthonormal(6, 2)
    done = complete_orthonormal(basis, 5)
    assert done.shape == (6, 5)
    assert torch.equal(done[:, :2], basis)
    assert _max_ortho_error(done) < 1e-12


@given(
    n=st.integers(3, 9),
    r=st.integers(1, 4),
    grad_rank=st.integers(0, 4),
    max_new=st.integers(0, 6),
    select=st.sampled_from(["svd", "qr_columns"]),
)
def test_augmentation_orthonormal_and_exact(n, r, grad_rank, max_new, select):
    """Ũ is orthonormal, spans U, has ≤ r + max_new columns, and Ũ(ŨᵀU) = U (so C̃ ×Ũ = C ×U exactly).

    Covers rank-deficient gradients (grad_rank < columns, including 0) and QR sign flips.
    """
    r = min(r, n)
    basis = _orthonormal(n, r)
    grad = torch.randn(n, grad_rank, dtype=F64) @ torch.randn(grad_rank, 4, dtype=F64)
    augmented, transport = orthonormal_augmentation(basis, grad, max_new, select=select)
    assert augmented.shape[1] <= min(n, r + max_new)
    assert _max_ortho_error(augmented) < 1e-10
    assert (augmented @ transport - basis).abs().max() < 1e-10
    if select == "svd":
        assert augmented.shape[1] == r + min(max_new, n - r, grad_rank)


@given(r1=st.integers(1, 3), r2=st.integers(1, 3), select=st.sampled_from(["svd", "qr_columns"]))
def test_core_transport_keeps_represented_tensor(r1, r2, select):
    """Spec §7.2: C̃ ×_i Ũ_i equals C ×_i U_i to 1e-10 after augmenting two modes of a 4-mode tensor."""
    sizes, ranks = (6, 5, 3, 3), (r1, r2, 3, 3)
    core = torch.randn(ranks, dtype=F64)
    factors = [_orthonormal(n, r) for n, r in zip(sizes, ranks, strict=True)]
    before = tucker_to_tensor(core, factors)
    maps = {}
    for mode in (0, 1):
        grad = torch.randn(sizes[mode], ranks[mode], dtype=F64)
        factors[mode], maps[mode] = orthonormal_augmentation(factors[mode], grad, ranks[mode], select=select)
    after = tucker_to_tensor(multi_mode_product(core, maps), factors)
    assert (after - before).abs().max() < 1e-10


@given(st.lists(st.floats(0, 10), min_size=1, max_size=8), st.floats(0, 20))
def test_rank_rule_is_the_smallest_rank_within_threshold(values, threshold):
    """The chosen ρ has tail ‖σ_{ρ:}‖ ≤ ϑ and ρ − 1 does not (corrected rule; ρ may be 0)."""
    sigma = torch.tensor(sorted(values, reverse=True), dtype=F64)
    rho = rank_from_singular_values(sigma, threshold)
    assert float(sigma[rho:].norm()) <= threshold + 1e-12
    if rho > 0:
        assert float(sigma[rho - 1 :].norm()) > threshold


def test_dlrt_net_rule_reproduces_off_by_one_and_fallback():
    """Faithful DLRT-Net rule: tail omits the last value; keeps the old rank when nothing qualifies."""
    sigma = torch.tensor([3.0, 2.0, 1.0], dtype=F64)
    # ρ = 1: the true tail is ‖(2, 1)‖ = 2.24 > 2.1, the faithful tail ‖(2)‖ = 2 < 2.1.
    assert rank_from_singular_values(sigma, 2.1) == 2
    assert rank_from_singular_values(sigma, 2.1, faithful_dlrt_net=True) == 1
    # Threshold 0: nothing passes the strict faithful test (fallback); the corrected rule keeps all.
    assert rank_from_singular_values(sigma, 0.0, faithful_dlrt_net=True, fallback=7) == 7
    assert rank_from_singular_values(sigma, 0.0) == 3
    assert rank_from_singular_values(sigma, math.inf) == 0


def _dlrt_net_reference_rank(d: list[float], tol: float) -> int:
    """DLRT-Net's rank rule transcribed from its S-step postprocessing: ``d`` holds the 2r singular values
    of the augmented core; j runs over 0 … 2r−2 with the tail d[j:2r−1]; r is kept when none qualifies.
    """
    rank = len(d) // 2
    for j in range(0, 2 * rank - 1):
        if math.sqrt(sum(x * x for x in d[j : 2 * rank - 1])) < tol:
            return j
    return rank


def test_dlrt_net_rule_keeps_the_old_rank_when_only_the_empty_tail_would_qualify():
    """σ = (1, 0.5, 0.3, 0.2), absolute ϑ = 0.25, r = 2: the tails over j = 0, 1, 2 are 1.157, 0.583 and 0.3,
    none below ϑ, so DLRT-Net keeps r = 2 (the empty tail at j = 3 is never looked at).
    """
    sigma = torch.tensor([1.0, 0.5, 0.3, 0.2], dtype=F64)
    assert _dlrt_net_reference_rank(sigma.tolist(), 0.25) == 2
    assert rank_from_singular_values(sigma, 0.25, faithful_dlrt_net=True, fallback=2) == 2
    # The corrected rule discards 0.3 and 0.2 together (tail 0.361 > 0.25) but 0.2 alone: rank 3.
    assert rank_from_singular_values(sigma, 0.25) == 3


@given(st.integers(1, 5), st.data())
def test_dlrt_net_rule_equals_the_reference_loop(rank, data):
    """On an augmented core's 2r singular values the faithful rule picks DLRT-Net's rank for any ϑ."""
    values = data.draw(st.lists(st.floats(0, 10), min_size=2 * rank, max_size=2 * rank))
    values = sorted(values, reverse=True)
    tol = data.draw(st.floats(0, 12))
    sigma = torch.tensor(values, dtype=F64)
    got = rank_from_singular_values(sigma, tol, faithful_dlrt_net=True, fallback=rank)
    assert got == _dlrt_net_reference_rank(values, tol)


def test_qr_columns_takes_the_qr_at_the_cap():
    """With nothing to add (r̂ = r), the faithful selection still returns the first r columns of
    QR([U | −G]) as RobustDLRT does: U with some column signs flipped, and M = ŨᵀU their diagonal.
    """
    gen = torch.Generator().manual_seed(3)
    basis, _ = torch.linalg.qr(torch.rand(5, 2, generator=gen, dtype=F64) + 0.5)
    basis = basis * basis[0].sign()  # positive first row: Householder QR flips these columns' signs
    grad = torch.randn(5, 2, generator=gen, dtype=F64)
    expected = torch.linalg.qr(torch.cat([basis, -grad], dim=1))[0][:, :2]
    assert not torch.allclose(expected, basis)  # the case exercises a sign flip
    augmented, transport = orthonormal_augmentation(basis, grad, 0, select="qr_columns")
    torch.testing.assert_close(augmented, expected, rtol=0, atol=1e-14)
    torch.testing.assert_close(transport, torch.diag(transport.diagonal()), rtol=0, atol=1e-14)
    torch.testing.assert_close(transport.diagonal().abs(), torch.ones(2, dtype=F64), rtol=0, atol=1e-14)
    torch.testing.assert_close(augmented @ transport, basis, rtol=0, atol=1e-14)
    # The corrected selection leaves a capped basis untouched.
    unchanged, identity = orthonormal_augmentation(basis, grad, 0)
    assert unchanged is basis and torch.equal(identity, torch.eye(2, dtype=F64))


def test_unknown_selection_rejected():
    """An unknown augmentation rule raises a ValueError naming it."""
    with pytest.raises(ValueError, match="bogus"):
        orthonormal_augmentation(_orthonormal(4, 1), torch.randn(4, 1, dtype=F64), 1, select="bogus")


@settings(max_examples=10)
@given(mode=st.integers(0, 1), lr=st.floats(0.01, 10.0))
def test_span_identity_and_k_gradient(mode, lr):
    """Spec §7.3: ∇_U L = ∇_K L·Sᵀ; span[U, K(λ)] = span[U, ∇_U L] for any λ; ∇_U L = finite differences."""
    sizes, ranks = (6, 5, 3, 3), (2, 2, 3, 3)
    core = torch.randn(ranks, dtype=F64)
    factors = [_orthonormal(n, r).requires_grad_() for n, r in zip(sizes, ranks, strict=True)]
    direction = torch.randn(sizes, dtype=F64)

    def loss_of(fs):
        weight = tucker_to_tensor(core, fs)
        return (direction * weight).sum() + 0.5 * weight.square().sum()

    loss_of(factors).backward()
    grad_u = factors[mode].grad
    plain = [u.detach() for u in factors]
    grad_w = direction + tucker_to_tensor(core, plain)
    q, r = torch.linalg.qr(unfold(core, mode).T)
    s = r.T
    projected = multi_mode_product(grad_w, {j: u.T for j, u in enumerate(plain) if j != mode})
    grad_k = unfold(projected, mode) @ q
    assert torch.allclose(grad_u, grad_k @ s.T, atol=1e-10)

    basis = plain[mode]
    k_step = basis @ s - lr * grad_k
    via_k, _ = orthonormal_augmentation(basis, k_step, ranks[mode])
    via_grad, _ = orthonormal_augmentation(basis, grad_u, ranks[mode])
    assert torch.allclose(via_k @ via_k.T, via_grad @ via_grad.T, atol=1e-8)

    perturbation = torch.randn_like(basis)
    eps = 1e-6
    shifted = lambda sign: loss_of([*plain[:mode], basis + sign * eps * perturbation, *plain[mode + 1 :]])  # noqa: E731
    finite = (shifted(1) - shifted(-1)) / (2 * eps)
    assert float(finite) == pytest.approx(float((grad_u * perturbation).sum()), rel=1e-6, abs=1e-8)

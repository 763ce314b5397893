"""The compiled top-k-magnitude LMO kernel (``slimtrain.fw.native``) against its definition and torch."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from slimtrain.fw import SFW, KSparsePolytope, KSupportNormBall, native

pytestmark = pytest.mark.skipif(native._kernel() is None, reason="no C compiler: the kernel is not built")


@st.composite
def batches(draw: st.DrawFn) -> tuple[torch.Tensor, int, torch.Tensor]:
    """Float32 rows, some drawn from a few values (many ties at the threshold), some with zeros."""
    rows = draw(st.integers(1, 4))
    n = draw(st.integers(1, 3000))
    k = draw(st.integers(1, n))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    g = torch.randn(rows, n, generator=gen)
    if draw(st.booleans()):
        levels = torch.tensor([0.0, 0.5, -0.5, 1.0, -1.0, 2.0])
        g = levels[torch.randint(0, len(levels), (rows, n), generator=gen)]
    g = g * 10.0 ** draw(st.integers(-30, 30))
    radii = torch.rand(rows, 1, generator=gen) + 0.1
    return g, k, radii


def _selection(g: torch.Tensor, k: int) -> torch.Tensor:
    """The reference selection: the k largest magnitudes, ties at the threshold to the lowest indices."""
    a = g.abs().double()
    order = torch.argsort(-a, dim=1, stable=True)[:, :k]
    return torch.zeros_like(g, dtype=torch.bool).scatter_(1, order, True)


@settings(max_examples=60, deadline=None)
@given(batches())
def test_k_support_kernel_equals_the_definition(batch):
    """The k-support kernel gives v = −r·g_S/‖g_S‖₂, S = the k largest |g| (ties: lowest indices)."""
    g, k, radii = batch
    mask = _selection(g, k)
    selected = torch.where(mask, g.double(), 0.0)
    norms = selected.norm(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
    expected = -radii.double() * selected / norms
    out = native.top_magnitude_lmo(g, radii, k, "k_support")
    assert out.dtype == torch.float32 and out.shape == g.shape
    assert not torch.any((out != 0) & ~mask)
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-6 * float(radii.max()))


@settings(max_examples=60, deadline=None)
@given(batches())
def test_k_sparse_kernel_equals_the_definition(batch):
    """The K-sparse kernel gives v = −r·sign(g) on exactly the selected k entries, 0 elsewhere, exactly."""
    g, k, radii = batch
    expected = torch.where(_selection(g, k), -radii * g.sign(), 0.0)
    assert torch.equal(native.top_magnitude_lmo(g, radii, k, "k_sparse"), expected)


@settings(max_examples=30, deadline=None)
@given(batches())
def test_kernel_matches_the_torch_path_without_ties(batch):
    """Where no two magnitudes tie, both paths select the same entries and give the same LMO."""
    g, k, radii = batch
    g = g + torch.linspace(1e-3, 2e-3, g.shape[1]) * (g.abs().max() + 1)  # distinct magnitudes
    for cls in (KSupportNormBall, KSparsePolytope):
        c = cls(g.shape[1], k, 1.0)
        fast = c.lmo_rows(g, radii)
        with native.disabled():
            slow = c.lmo_rows(g, radii)
        torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-7)


def test_zero_radius_gives_a_zero_row():
    """A vanished direction's radius is 0 (spec §2.2 step 3): the kernel's row is then all zeros."""
    g = torch.randn(2, 50)
    out = native.top_magnitude_lmo(g, torch.tensor([0.0, 1.0]), 5, "k_support")
    assert torch.count_nonzero(out[0]) == 0 and torch.count_nonzero(out[1]) == 5


def test_bad_arguments_are_named():
    """An unknown kind, a k outside [1, n] or another dtype raises an error naming it, not a crash in C."""
    g = torch.randn(1, 10)
    with pytest.raises(ValueError, match="float32"):
        native.top_magnitude_lmo(g.double(), torch.ones(1), 3, "k_sparse")
    with pytest.raises(ValueError, match="kind"):
        native.top_magnitude_lmo(g, torch.ones(1), 3, "nuclear")
    with pytest.raises(ValueError, match=r"k must lie in \[1, 10\], got 11"):
        native.top_magnitude_lmo(g, torch.ones(1), 11, "k_sparse")


def test_only_cpu_float32_without_grad_takes_the_kernel():
    """Other dtypes, or tensors that require grad, stay on the torch path."""
    assert native.supports(torch.randn(2, 3))
    assert not native.supports(torch.randn(2, 3, dtype=torch.float64))
    assert not native.supports(torch.randn(2, 3, requires_grad=True))
    with native.disabled():
        assert not native.supports(torch.randn(2, 3))


def test_sfw_steps_agree_with_and_without_the_kernel():
    """Five SFW k-support steps on a float32 model land on the same parameters by either path."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(30, 20), torch.nn.ReLU(), torch.nn.Linear(20, 3))
    models = [model, copy.deepcopy(model)]
    x, y = torch.randn(64, 30), torch.randint(0, 3, (64,))
    finals = []
    for model, use_kernel in zip(models, (True, False), strict=True):
        sets = [KSupportNormBall(p.numel(), max(1, p.numel() // 4), 5.0) for p in model.parameters()]
        opt = SFW([{"params": list(model.parameters()), "constraint": sets}], lr=0.1, momentum=0.9)
        for _ in range(5):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            if use_kernel:
                opt.step()
            else:
                with native.disabled():
                    opt.step()
        finals.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    torch.testing.assert_close(finals[0], finals[1], rtol=1e-4, atol=1e-6)


def test_a_missing_compiler_falls_back_to_torch_with_one_warning(monkeypatch, tmp_path):
    """Without a compiler the kernel is reported missing once and the LMOs still work (on torch)."""
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("SLIMTRAIN_CACHE_DIR", str(tmp_path / "cache"))
    native._kernel.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="torch.topk instead"):
            assert not native.supports(torch.randn(2, 3))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            out = KSupportNormBall(10, 3, 1.0).lmo(torch.randn(10))
        assert torch.count_nonzero(out) == 3
        assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").glob("*.so"))
    finally:
        native._kernel.cache_clear()

"""The SFW optimizer (spec sfw.md §2.2, §2.7, §5, §7.4–7.6, §7.8, §7.9)."""

import io
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from slimtrain.fw import (
    SFW,
    GroupKSupportNormBall,
    KSparsePolytope,
    KSupportNormBall,
    LpBall,
    NuclearNormBall,
    SpectralKSparsePolytope,
    SpectralKSupportNormBall,
    build_constraints,
)

D = torch.float64
RESCALES = ("gradient", "fast_gradient", "diameter", "none")


def _sets_for(shape):
    """One set of every family for a (4, 3, 2) tensor."""
    n = math.prod(shape)
    return [
        LpBall(n, 1.0),
        LpBall(n, 1.0, p=1),
        LpBall(n, 1.0, p=math.inf),
        LpBall(n, 1.0, p=3),
        KSparsePolytope(n, 3, 0.5),
        KSupportNormBall(n, 3, 1.0),
        GroupKSupportNormBall.for_filters(shape, 2, 1.0),
        NuclearNormBall(shape[0], n // shape[0], 1.0),
        SpectralKSupportNormBall(shape[0], n // shape[0], 2, 1.0),
        SpectralKSparsePolytope(shape[0], n // shape[0], 2, 1.0),
    ]


@pytest.mark.parametrize("rescale", RESCALES)
def test_iterates_stay_feasible(rescale):
    """After the initial shift, 200 steps with random gradients keep ‖θ‖_C ≤ r(1 + 1e-6) for every set."""
    shape = (4, 3, 2)
    sets = _sets_for(shape)
    params = [nn.Parameter(10 * torch.randn(shape, dtype=D)) for _ in sets]
    opt = SFW([{"params": params, "constraint": sets}], lr=0.9, rescale=rescale)
    gen = torch.Generator().manual_seed(1)
    for _ in range(200):
        for p in params:
            p.grad = torch.randn(shape, generator=gen, dtype=D)
        opt.step()
    for p, c in zip(params, sets, strict=True):
        assert c.gauge(p).item() <= c.radius * (1 + 1e-6), type(c).__name__


@pytest.mark.parametrize("rescale", RESCALES)
@settings(max_examples=10)
@given(seed=st.integers(0, 2**31 - 1), lr=st.floats(0.0, 1.0), scale=st.floats(1e-3, 1e3))
def test_one_step_matches_the_spec_formula(rescale, seed, lr, scale):
    """θ' = (1−γ)θ + γv with γ = clamp(lr·φ, 0, 1) and φ per rescale mode, computed independently (§2.2)."""
    gen = torch.Generator().manual_seed(seed)
    c = KSupportNormBall(12, 4, 2.0)
    theta = c.shift_inside(torch.randn(12, generator=gen, dtype=D))
    g = scale * torch.randn(12, generator=gen, dtype=D)
    p = nn.Parameter(theta.clone())
    opt = SFW([{"params": [p], "constraint": [c]}], lr=lr, momentum=0.0, rescale=rescale)
    p.grad = g
    opt.step()
    idx = g.abs().topk(4).indices
    v = torch.zeros(12, dtype=D)
    v[idx] = -2.0 * g[idx] / g[idx].norm()
    phi = {
        "gradient": g.norm() / (theta - v).norm(),
        "fast_gradient": g.norm() / (c.diameter / 2),
        "diameter": 1 / c.diameter,
        "none": 1.0,
    }[rescale]
    gamma = min(max(lr * float(phi), 0.0), 1.0)
    torch.testing.assert_close(p.detach(), (1 - gamma) * theta + gamma * v, rtol=1e-12, atol=1e-12)


def test_gradient_rescale_gives_zero_step_at_the_vertex():
    """With θ = v the gradient rescale has ‖θ − v‖ = 0, so γ = 0 and θ does not move (§7.5)."""
    c = KSupportNormBall(6, 2, 1.0)
    g = torch.randn(6, dtype=D)
    p = nn.Parameter(c.lmo(g))
    before = p.detach().clone()
    opt = SFW([{"params": [p], "constraint": [c]}], lr=1.0, momentum=0.0)
    p.grad = g
    opt.step()
    assert torch.equal(p.detach(), before)


def test_rescale_none_rejects_lr_above_one():
    """rescale='none' needs lr ∈ [0, 1]: checked at construction and at step time (schedules change lr)."""
    c = [LpBall(3, 1.0)]
    with pytest.raises(ValueError, match="lr"):
        SFW([{"params": [nn.Parameter(torch.zeros(3))], "constraint": c}], lr=1.5, rescale="none")
    p = nn.Parameter(torch.zeros(3))
    opt = SFW([{"params": [p], "constraint": c}], lr=0.5, rescale="none")
    opt.param_groups[0]["lr"] = 2.0
    p.grad = torch.ones(3)
    with pytest.raises(ValueError, match="lr"):
        opt.step()


@pytest.mark.parametrize(("convention", "limit"), [("ema", 1.0), ("sum", 10.0)])
def test_momentum_conventions(convention, limit):
    """Constant g: the 'ema' buffer stays g; the 'sum' buffer tends to g/(1 − μ) (§7.6)."""
    p = nn.Parameter(torch.zeros(5, dtype=D))
    opt = SFW([{"params": [p], "constraint": [LpBall(5, 1.0)]}], momentum=0.9, momentum_convention=convention)
    g = torch.arange(1.0, 6.0, dtype=D)
    for _ in range(400):
        p.grad = g.clone()
        opt.step()
    torch.testing.assert_close(opt.state[p]["momentum_buffer"], limit * g, rtol=1e-9, atol=0)


def test_step_is_skipped_on_non_finite_gradients():
    """One inf/NaN gradient anywhere skips the whole step: parameters and momentum are untouched (the step
    counter counts calls: the skip is decided on the device, without a host synchronisation).
    """
    a, b = nn.Parameter(torch.randn(4)), nn.Parameter(torch.randn(3))
    opt = SFW([{"params": [a, b], "constraint": [LpBall(4, 10.0), LpBall(3, 10.0)]}], lr=0.5)
    a.grad, b.grad = torch.ones(4), torch.ones(3)
    opt.step()
    snapshot = (a.detach().clone(), b.detach().clone(), opt.state[a]["momentum_buffer"].clone())
    a.grad, b.grad = torch.ones(4), torch.tensor([1.0, float("nan"), 1.0])
    opt.step()
    assert torch.equal(a.detach(), snapshot[0]) and torch.equal(b.detach(), snapshot[1])
    assert torch.equal(opt.state[a]["momentum_buffer"], snapshot[2]) and opt.state[a]["step"] == 2


def test_grad_scaler_step_equals_an_unscaled_step():
    """With torch.amp.GradScaler the update equals the plain update (the optimizer sees unscaled grads)."""
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    twin = nn.Linear(4, 3)
    twin.load_state_dict(model.state_dict())
    x = torch.randn(8, 4)
    opts = [SFW(build_constraints(m, radius=5.0, k=0.5), lr=0.3) for m in (model, twin)]
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    scaler.scale(model(x).square().mean()).backward()
    scaler.step(opts[0])
    scaler.update()
    twin(x).square().mean().backward()
    opts[1].step()
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(p, q)


def test_closure_is_called_and_its_loss_returned():
    """step(closure) re-evaluates the loss with gradients enabled and returns it."""
    p = nn.Parameter(torch.ones(3))
    opt = SFW([{"params": [p], "constraint": [LpBall(3, 5.0)]}])

    def closure():
        opt.zero_grad()
        loss = (p * torch.arange(3.0)).sum()
        loss.backward()
        return loss

    assert opt.step(closure).item() == pytest.approx(3.0)
    assert opt.state[p]["step"] == 1


def test_missing_gradient_counts_as_zero_and_keeps_feasibility():
    """A parameter without a gradient is still updated as a convex combination (treated as zero gradient)."""
    a, b = nn.Parameter(torch.randn(4, dtype=D)), nn.Parameter(torch.randn(4, dtype=D))
    sets = [KSupportNormBall(4, 2, 1.0), KSupportNormBall(4, 2, 1.0)]
    opt = SFW([{"params": [a, b], "constraint": sets}], lr=0.5, rescale="diameter")
    before = b.detach().clone()
    for _ in range(3):
        a.grad = torch.randn(4, dtype=D)
        opt.step()
    # v = 0 for a zero direction, so under 'diameter' θ shrinks toward 0 by (1 − γ) each step (§2.2 note).
    gamma = 0.5 / sets[1].diameter
    torch.testing.assert_close(b.detach(), (1 - gamma) ** 3 * before)
    assert sets[1].is_feasible(b)


@pytest.mark.parametrize("numel", [4, 5000], ids=["stacked", "alone"])
def test_vanishing_direction_gives_zero_vertex_in_the_optimizer(numel):
    """A direction of norm below 1e-10 moves θ toward v = 0, not toward a unit vertex (spec §2.2 step 3).

    Small units are stacked into one LMO call and large ones are not; the guard must hold for both, next
    to a unit with an ordinary gradient in the same bucket.
    """
    a, b = nn.Parameter(torch.randn(numel, dtype=D)), nn.Parameter(torch.randn(numel, dtype=D))
    sets = [KSupportNormBall(numel, 2, 1.0), KSupportNormBall(numel, 2, 1.0)]
    opt = SFW([{"params": [a, b], "constraint": sets}], lr=0.5, rescale="diameter", initial_shift=False)
    before = b.detach().clone()
    a.grad = torch.randn(numel, dtype=D)
    b.grad = torch.full((numel,), 1e-14, dtype=D)
    opt.step()
    gamma = 0.5 / sets[1].diameter
    torch.testing.assert_close(
        b.detach(), torch.lerp(before, torch.zeros_like(before), gamma), rtol=0, atol=0
    )
    assert not torch.equal(a.detach(), before)


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(3, 4)
        self.fc2 = nn.Linear(4, 4)
        self.fc3 = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc3(torch.tanh(self.fc2(torch.tanh(self.fc1(x)))))


def test_faithful_mode_matches_an_independent_float64_reference():
    """Faithful settings ('ema', no initial shift, by-shape radii) follow a plain per-tensor float64 loop.

    The reference below re-implements §2.2 tensor by tensor with its own sort-based top-k, no batching.
    """
    torch.manual_seed(3)
    model = _Tiny().double()
    groups = build_constraints(model, k=0.5, tau=2.0, n_draws=5, radius_lookup="by_shape")
    sets = groups[0]["constraint"]
    opt = SFW(groups, lr=0.4, momentum=0.9, momentum_convention="ema", initial_shift=False)
    ref = [p.detach().clone() for p in model.parameters()]
    bufs = [None] * len(ref)
    x, y = torch.randn(16, 3, dtype=D), torch.randn(16, 2, dtype=D)
    for _ in range(6):
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        grads = [p.grad.clone() for p in model.parameters()]
        opt.step()
        for i, (theta, g, c) in enumerate(zip(ref, grads, sets, strict=True)):
            bufs[i] = g.clone() if bufs[i] is None else 0.9 * bufs[i] + 0.1 * g
            m = bufs[i].flatten()
            order = sorted(range(m.numel()), key=lambda j: -abs(m[j].item()))[: c.k]
            v = torch.zeros_like(m)
            v[order] = m[order]
            v = -c.radius * v / v.norm()
            gap = (theta.flatten() - v).norm()
            gamma = min(max(0.4 * (m.norm() / gap).item(), 0.0), 1.0)
            ref[i] = ((1 - gamma) * theta.flatten() + gamma * v).view_as(theta)
        for p, r in zip(model.parameters(), ref, strict=True):
            torch.testing.assert_close(p.detach(), r, rtol=1e-12, atol=1e-12)


def test_state_dict_round_trip_continues_identically():
    """Saving after 3 steps (weights_only load) and resuming a fresh optimizer gives the same next steps."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(16, 3))
    x = torch.randn(5, 2, 4, 4)

    def run(opt, m, steps):
        for _ in range(steps):
            opt.zero_grad()
            m(x).square().mean().backward()
            opt.step()

    opt = SFW(build_constraints(model, "lowrank", k=0.5, n_draws=3), lr=0.2, k_delay_steps=4)
    run(opt, model, 3)
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    clone = nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(16, 3))
    clone.load_state_dict(saved["model"])
    # The resumed optimizer is built with other settings; load_state_dict restores the saved ones.
    opt2 = SFW(build_constraints(clone, "filter", radius=1.0), lr=0.9, initial_shift=False)
    opt2.load_state_dict(saved["opt"])
    assert type(opt2.param_groups[0]["constraint"][0]) is SpectralKSupportNormBall
    run(opt, model, 3)
    run(opt2, clone, 3)
    for p, q in zip(model.parameters(), clone.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_delayed_k_uses_the_l2_ball_then_switches_feasibly():
    """Before the switch the k-support LMO is the dense L2-ball LMO; after it θ is feasible for the real k."""
    c = KSupportNormBall(20, 2, 1.0)
    p = nn.Parameter(torch.zeros(20, dtype=D))
    opt = SFW([{"params": [p], "constraint": [c]}], lr=1.0, momentum=0.0, rescale="none", k_delay_steps=3)
    g = torch.randn(20, dtype=D)
    p.grad = g
    opt.step()  # γ = 1: θ = v of the relaxed set
    torch.testing.assert_close(p.detach(), -g / g.norm())
    assert c.gauge(p).item() > c.radius  # dense unit vector, outside the 2-support ball
    for _ in range(2):
        opt.step()
    opt.param_groups[0]["lr"] = 0.0
    opt.step()  # the switch: shift inside, then a zero step
    assert c.is_feasible(p, rtol=1e-12)
    opt.param_groups[0]["lr"] = 1.0
    opt.step()
    assert torch.count_nonzero(p.detach()) == 2


def _k_support_norm_k2(x: torch.Tensor) -> float:
    """The 2-support norm of a 4-vector in closed form (Argyriou et al. 2012): with |x| sorted down a₁…a₄,
    √(a₁² + (a₂+a₃+a₄)²) if a₁ > a₂+a₃+a₄, else (a₁+a₂+a₃+a₄)/√2.
    """
    a = sorted(x.abs().tolist(), reverse=True)
    tail = a[1] + a[2] + a[3]
    return math.hypot(a[0], tail) if a[0] > tail else sum(a) / math.sqrt(2)


def _delayed_k_reference(theta, target, *, radius, lr, mu, delay, steps, shift_before_forward):
    """SFW with delayed k on L = ½‖θ − c‖², from the formulas of the paper's code: "sum" momentum, gradient
    rescaling, the L2-ball LMO −r·m/‖m‖ for the first ``delay`` steps, then the 2-support-ball LMO
    −r·m_S/‖m_S‖ (S: the two largest |m_i|) after the shift θ ← θ·min(1, r/‖θ‖₂ˢᵖ). The shift happens before
    step ``delay``'s forward pass (the paper's code, at an epoch end) or after its gradient (``in_step``).
    """
    theta, m = theta.clone(), None
    for t in range(steps):
        if t == delay and shift_before_forward:
            theta = theta * min(1.0, radius / _k_support_norm_k2(theta))
        g = theta - target
        if t == delay and not shift_before_forward:
            theta = theta * min(1.0, radius / _k_support_norm_k2(theta))
        m = g.clone() if m is None else mu * m + g
        if t < delay:
            v = -radius * m / m.norm()
        else:
            top = m.abs().topk(2).indices
            v = torch.zeros_like(m)
            v[top] = -radius * m[top] / m[top].norm()
        gamma = min(max(lr * float(m.norm() / (theta - v).norm()), 0.0), 1.0)
        theta = (1 - gamma) * theta + gamma * v
    return theta


@pytest.mark.parametrize("k_switch", ["in_step", "on_call"])
def test_delayed_k_switch_timing_matches_the_reference_formulas(k_switch):
    """``k_switch="on_call"`` with :meth:`SFW.switch_k` called between the third step and the fourth forward
    pass takes the fourth gradient at the shifted point, as the paper's code does at an epoch end;
    ``"in_step"`` takes it before the shift. Each equals its hand-written reference; the two differ (by 6e-3).
    """
    theta0 = torch.tensor([0.6, -0.5, 0.4, 0.3], dtype=D)
    target = torch.tensor([1.0, 1.0, -1.0, 0.2], dtype=D)
    settings_ = {"radius": 1.0, "lr": 0.3, "mu": 0.9, "delay": 3, "steps": 5}
    p = nn.Parameter(theta0.clone())
    delay_steps = settings_["delay"] if k_switch == "in_step" else None
    opt = SFW(
        [{"params": [p], "constraint": [KSupportNormBall(4, 2, settings_["radius"])]}],
        lr=settings_["lr"],
        momentum=settings_["mu"],
        k_delay_steps=delay_steps,
        k_switch=k_switch,
        initial_shift=False,
    )
    for t in range(settings_["steps"]):
        if t == settings_["delay"]:
            assert _k_support_norm_k2(p.detach()) > settings_["radius"] * 1.1  # the shift is not trivial
            if k_switch == "on_call":
                opt.switch_k()
        opt.zero_grad()
        (0.5 * (p - target).square().sum()).backward()
        opt.step()
    for timing in (True, False):
        expected = _delayed_k_reference(theta0, target, shift_before_forward=timing, **settings_)
        if timing == (k_switch == "on_call"):
            torch.testing.assert_close(p.detach(), expected, rtol=0, atol=1e-13)
        else:
            assert (p.detach() - expected).abs().max() > 1e-3


def test_switch_k_is_checkpointed_and_happens_once():
    """The relaxed state travels in ``state_dict``; a second ``switch_k`` changes nothing; states saved before
    the timing option existed resume with the in-step switch still due.
    """
    c = KSupportNormBall(6, 2, 1.0)
    p = nn.Parameter(torch.full((6,), 0.4, dtype=D))
    opt = SFW([{"params": [p], "constraint": [c]}], lr=0.1, k_switch="on_call", initial_shift=False)
    p.grad = torch.ones(6, dtype=D)
    opt.step()
    saved = opt.state_dict()
    assert saved["param_groups"][0]["k_relaxed"] is True
    opt.switch_k()
    assert c.is_feasible(p, rtol=1e-12)
    shifted = p.detach().clone()
    opt.switch_k()
    assert torch.equal(p.detach(), shifted)
    clone = nn.Parameter(p.detach().clone())
    restored = SFW([{"params": [clone], "constraint": [c]}], lr=0.1, initial_shift=False)
    restored.load_state_dict(saved)
    assert restored.param_groups[0]["k_relaxed"] and restored.param_groups[0]["k_switch"] == "on_call"
    legacy = {**saved, "param_groups": [dict(saved["param_groups"][0], k_delay_steps=4)]}
    for key in ("k_relaxed", "k_switch"):
        del legacy["param_groups"][0][key]
    restored.load_state_dict(legacy)  # one step done of a delay of 4
    assert restored.param_groups[0]["k_relaxed"] and restored.param_groups[0]["k_switch"] == "in_step"


def test_global_constraint_acts_on_the_concatenation():
    """A single set over a group acts on the flattened concatenation; shapes round-trip (§7.8)."""
    a, b = nn.Parameter(torch.randn(2, 3, dtype=D)), nn.Parameter(torch.randn(4, dtype=D))
    c = KSupportNormBall(10, 3, 1.0)
    theta = c.shift_inside(torch.cat([a.detach().flatten(), b.detach()]))
    opt = SFW([{"params": [a, b], "constraint": c}], lr=0.3, momentum=0.0)
    ga, gb = torch.randn(2, 3, dtype=D), torch.randn(4, dtype=D)
    a.grad, b.grad = ga, gb
    opt.step()
    g = torch.cat([ga.flatten(), gb])
    v = c.lmo(g)
    gamma = min(0.3 * (g.norm() / (theta - v).norm()).item(), 1.0)
    expected = (1 - gamma) * theta + gamma * v
    torch.testing.assert_close(a.detach(), expected[:6].view(2, 3))
    torch.testing.assert_close(b.detach(), expected[6:])


def test_bad_groups_are_rejected_with_their_culprit():
    """Missing constraints, wrong sizes and bad hyperparameters raise errors naming group and parameter."""
    p = nn.Parameter(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="no 'constraint'"):
        SFW([p])
    with pytest.raises(ValueError, match=r"parameter 0 of shape \(2, 3\)"):
        SFW([{"params": [p], "constraint": [LpBall(5, 1.0)]}])
    with pytest.raises(ValueError, match="rescale"):
        SFW([{"params": [p], "constraint": [LpBall(6, 1.0)]}], rescale="bogus")
    with pytest.raises(ValueError, match="k_delay_steps"):
        SFW([{"params": [p], "constraint": [LpBall(6, 1.0)]}], k_delay_steps=-1)
    with pytest.raises(ValueError, match="k_switch"):
        SFW([{"params": [p], "constraint": [LpBall(6, 1.0)]}], k_switch="later")
    with pytest.raises(ValueError, match="give no k_delay_steps"):
        SFW([{"params": [p], "constraint": [LpBall(6, 1.0)]}], k_delay_steps=3, k_switch="on_call")


def test_one_group_of_mixed_dtypes_steps_like_separate_groups():
    """Batching a group's tensors must not mix their dtypes: a group holding a float32 and a float64 tensor
    (several of each size, so they are stacked) takes exactly the steps of one group per tensor.
    """
    torch.manual_seed(0)
    shapes = [(6,), (6,), (5000,), (40,)]
    dtypes = [torch.float32, torch.float64, torch.float32, torch.float64]
    together = [nn.Parameter(torch.randn(s, dtype=d)) for s, d in zip(shapes, dtypes, strict=True)]
    apart = [nn.Parameter(p.detach().clone()) for p in together]
    sets = [KSupportNormBall(p.numel(), 2, 1.5 + i) for i, p in enumerate(together)]
    joint = SFW([{"params": together, "constraint": sets}], lr=0.2)
    separate = SFW([{"params": [p], "constraint": [c]} for p, c in zip(apart, sets, strict=True)], lr=0.2)
    for _ in range(4):
        for a, b in zip(together, apart, strict=True):
            a.grad = torch.randn_like(a)
            b.grad = a.grad.clone()
        joint.step()
        separate.step()
    for a, b, c in zip(together, apart, sets, strict=True):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
        assert c.is_feasible(a.detach())

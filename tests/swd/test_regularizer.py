"""SelectiveWeightDecay: penalty gradient, hook equivalence, schedule, state_dict, stability guard."""

import math
import warnings

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from slimtrain.swd import ExponentialSchedule, MagnitudeSelection, SelectiveWeightDecay

from .swd_models import SmallCNN

MU = 5e-4


def _model() -> nn.Module:
    return SmallCNN().double()


def _swd(**kwargs) -> SelectiveWeightDecay:
    args = {"selection": MagnitudeSelection(900), "weight_decay": MU, "total_steps": 10}
    return SelectiveWeightDecay(**(args | kwargs))


def test_penalty_gradient_is_mu_a_w_on_selected_and_zero_on_kept() -> None:
    """Autograd of ½·μ·a·Σ_sel w² equals μ·a·w on selected entries and exactly 0 on kept ones."""
    model, swd = _model(), _swd()
    for _ in range(3):
        swd.step()
    selected = {s.name: s.removed for s in swd.selection.select(model)}
    swd.penalty(model).backward()
    for name, p in model.named_parameters():
        if name in selected:
            expected = MU * swd.a * p.detach() * selected[name]
            torch.testing.assert_close(p.grad, expected, rtol=1e-12, atol=0)
            assert (p.grad[~selected[name]] == 0).all()
        else:
            assert p.grad is None


def test_gradient_hook_equals_loss_term() -> None:
    """apply_ adds to .grad exactly what backpropagating penalty() adds (on top of an existing gradient)."""
    model_a, swd = _model(), _swd()
    model_b = _model()
    model_b.load_state_dict(model_a.state_dict())
    x = torch.randn(4, 1, 8, 8, dtype=torch.float64)
    (model_a(x).square().sum() + swd.penalty(model_a)).backward()
    model_b(x).square().sum().backward()
    swd.apply_(model_b)
    for (name, pa), pb in zip(model_a.named_parameters(), model_b.parameters(), strict=True):
        torch.testing.assert_close(pa.grad, pb.grad, rtol=1e-12, atol=1e-15, msg=name)


def test_sgd_decays_selected_by_mu_one_plus_a_and_kept_by_mu() -> None:
    """With SGD weight decay μ and zero loss, a step scales selected w by 1−η·μ(1+a) and kept w by 1−η·μ."""
    model, swd = _model(), _swd(a_min=3.0, a_max=3.0)
    lr = 0.5
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, weight_decay=MU)
    selected = {s.name: s.removed for s in swd.selection.select(model)}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)  # a zero loss gradient, so SGD also decays the unselected tensors
    swd.apply_(model)
    optimizer.step()
    for name, p in model.named_parameters():
        sel = selected.get(name, torch.zeros_like(p, dtype=torch.bool))
        factor = torch.where(sel, 1 - lr * MU * (1 + 3.0), torch.full_like(p, 1 - lr * MU))
        torch.testing.assert_close(p.detach(), before[name] * factor, rtol=1e-12, atol=0)


def test_schedule_start_middle_end() -> None:
    """a_0 = a_min, a_{T/2} = √(a_min·a_max), a_T = a_max, and a stays at a_max after T."""
    schedule = ExponentialSchedule(0.1, 1e5, 100)
    assert schedule(0) == pytest.approx(0.1, rel=1e-12)
    assert schedule(50) == pytest.approx(math.sqrt(0.1 * 1e5), rel=1e-12)
    assert schedule(100) == pytest.approx(1e5, rel=1e-12)
    assert schedule(250) == pytest.approx(1e5, rel=1e-12)


@given(st.integers(1, 1000), st.floats(1e-3, 10), st.floats(1, 1e6), st.data())
def test_log_a_is_affine_in_the_step(total: int, a_min: float, ratio: float, data: st.DataObject) -> None:
    """The log of a_t is affine in t on [0, T]: log a_t − log a_0 = (t/T)·(log a_T − log a_0)."""
    schedule = ExponentialSchedule(a_min, a_min * ratio, total)
    t = data.draw(st.integers(0, total))
    assert math.log(schedule(t)) - math.log(a_min) == pytest.approx(t / total * math.log(ratio), abs=1e-9)


def test_state_dict_keeps_schedule_position() -> None:
    """A fresh regularizer loaded from state_dict continues at the same step and a."""
    swd = _swd(total_steps=20)
    for _ in range(7):
        swd.step()
    resumed = _swd(total_steps=1)
    resumed.load_state_dict(swd.state_dict())
    assert resumed.step_count == 7 and resumed.a == swd.a
    resumed.step()
    swd.step()
    assert resumed.a == swd.a


def test_load_state_dict_names_missing_keys() -> None:
    """A state_dict without the step counter is rejected with the key named."""
    with pytest.raises(KeyError, match="step_count"):
        _swd().load_state_dict({"weight_decay": MU, "a_min": 1, "a_max": 1, "total_steps": 1})


def _guard_warnings(lr: float, a: float, momentum: float = 0.9) -> list[warnings.WarningMessage]:
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=MU)
    swd = _swd(a_min=a, a_max=a, optimizer=optimizer)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        swd.penalty(model)
        swd.apply_(model)
    return [w for w in caught if issubclass(w.category, RuntimeWarning)]


def test_stability_guard_fires_above_the_bound_once() -> None:
    """lr·μ(1 + a) ≥ 2(1 + β) warns, and only once over several calls."""
    a = 2 * 1.9 / (0.1 * MU) * 1.01 - 1
    assert len(_guard_warnings(0.1, a)) == 1


def test_stability_guard_silent_below_the_bound() -> None:
    """lr·μ(1 + a) < 2(1 + β) never warns."""
    a = 2 * 1.9 / (0.1 * MU) * 0.99 - 1
    assert _guard_warnings(0.1, a) == []


def test_migration_counts_entries_entering_and_leaving_the_selection() -> None:
    """Swapping one selected and one kept magnitude moves exactly one entry in and one out."""
    model = _model()
    swd = _swd(track_migration=True)
    swd.apply_(model)
    assert swd.migration is None
    removed = {s.name: s.removed for s in swd.selection.select(model)}["fc.weight"]
    w = model.fc.weight
    sel, kept = tuple(torch.nonzero(removed)[0]), tuple(torch.nonzero(~removed)[0])
    with torch.no_grad():
        w[sel], w[kept] = w[kept].item(), w[sel].item()
    swd.apply_(model)
    assert swd.migration == (1, 1)


@pytest.mark.parametrize(("lr", "a"), [(0.1, 3.0), (10.0, 1e5)])
def test_decoupled_shrink_scales_selected_entries_only(lr: float, a: float) -> None:
    """shrink_ multiplies selected entries by max(0, 1 − η·μ·a) and leaves every other entry unchanged."""
    model, swd = _model(), _swd(a_min=a, a_max=a)
    selected = {s.name: s.removed for s in swd.selection.select(model)}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    swd.shrink_(model, lr)
    factor = max(0.0, 1 - lr * MU * a)
    for name, p in model.named_parameters():
        sel = selected.get(name, torch.zeros_like(p, dtype=torch.bool))
        torch.testing.assert_close(p.detach(), torch.where(sel, before[name] * factor, before[name]))

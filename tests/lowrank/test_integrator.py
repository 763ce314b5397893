"""TDLRT integrator: orthonormality, exact augmentation, truncation bound, stepping once (spec §7)."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from slimtrain.algebra.tucker import multi_mode_product
from slimtrain.layers import MatrixFactorizedLinear, TuckerFactorizedConv2d
from slimtrain.lowrank import TDLRT, convert_to_lowrank, factorized_layers

F64 = torch.float64


def tiny_model(**convert_kwargs) -> nn.Sequential:
    model = nn.Sequential(
        nn.Conv2d(2, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Conv2d(6, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 3 * 3, 12),
        nn.ReLU(),
        nn.Linear(12, 3),
    ).to(F64)
    convert_to_lowrank(model, init="from_weights", **convert_kwargs)
    return model


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(16, 2, 6, 6, generator=gen, dtype=F64), torch.randint(0, 3, (16,), generator=gen)


def closure_for(model, x, y, log=None):
    def closure():
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        if log is not None:
            log(loss)
        return loss

    return closure


def ortho_error(u: torch.Tensor) -> float:
    u = u.detach()
    return float((u.T @ u - torch.eye(u.shape[1], dtype=u.dtype)).abs().max())


def sgd(lr=0.05, momentum=0.0):
    return lambda params: torch.optim.SGD(params, lr=lr, momentum=momentum)


@pytest.mark.parametrize(
    ("options", "conversion"),
    [
        ({"variant": "two_pass"}, {}),
        ({"variant": "parallel"}, {}),
        ({"variant": "local", "local_steps": 2}, {}),
        ({"aug_cap": "n", "aug_select": "qr_columns", "truncation": "dlrt_net"}, {"conv": "matrix"}),
        ({"state_transport": "none"}, {"adaptive_modes": (0, 1, 2, 3), "tucker_min_rank": 1}),
        (
            {"passes": 3, "aug_cap": "n", "truncation": "dlrt_net", "state_transport": "none"},
            {"conv": "matrix"},
        ),
    ],
)
def test_factors_orthonormal_and_ranks_within_bounds(options, conversion):
    """After every step all factors satisfy ‖UᵀU − I‖_max < 1e-10 and r_min ≤ r ≤ r_max; ranks adapt."""
    model = tiny_model(**conversion)
    integrator = TDLRT(model, sgd(0.1, 0.9), tau=0.6, **options)
    initial = integrator.ranks()
    for step in range(4):  # an even count: local cycles of 2 end truncated
        integrator.step(closure_for(model, *batch(step)))
        for layer in factorized_layers(model).values():
            assert all(ortho_error(u) < 1e-10 for u in layer.factors)
            for r, lo, hi in zip(layer.ranks, layer.min_ranks, layer.max_ranks, strict=True):
                assert lo <= r <= hi
    assert integrator.ranks() != initial


def test_augmentation_keeps_weight_same_batch_and_bn_updated_once():
    """Pass 2 sees the same dense weights and loss (same dropout mask); BN running stats update once."""
    model = tiny_model(rank_fraction=0.4)
    bn = model[1]
    integrator = TDLRT(model, sgd(0.05), tau=0.1)
    x, y = batch()
    seen = []
    bn_inputs = []
    bn.register_forward_hook(lambda m, inp, out: bn_inputs.append(inp[0].detach()))
    running_mean = bn.running_mean.clone()
    widths = {n: layer.augmented_ranks() for n, layer in factorized_layers(model).items()}

    def log(loss):
        layers = factorized_layers(model)
        seen.append(
            (float(loss.detach()), {n: layer.dense_weight().detach().clone() for n, layer in layers.items()})
        )
        if len(seen) == 2:
            for name, layer in layers.items():
                assert layer.ranks == widths[name]
                assert all(ortho_error(u) < 1e-10 for u in layer.factors)

    integrator.step(closure_for(model, x, y, log))
    (loss1, w1), (loss2, w2) = seen
    assert loss1 == pytest.approx(loss2, abs=1e-12)
    for name in w1:
        assert (w1[name] - w2[name]).abs().max() < 1e-10
    expected = 0.9 * running_mean + 0.1 * bn_inputs[0].mean(dim=(0, 2, 3))
    assert torch.allclose(bn.running_mean, expected, atol=1e-12)
    assert int(bn.num_batches_tracked) == 1


def test_non_factorized_parameters_stepped_exactly_once():
    """Plain SGD moves the dense last layer by exactly −lr·∇ (one step, not two); factors are not held."""
    model = tiny_model()
    integrator = TDLRT(model, sgd(0.1), tau=0.1)
    last = model[-1]
    before = last.weight.detach().clone()
    grads = []
    integrator.step(closure_for(model, *batch(), log=lambda _: grads.append(last.weight.grad.clone())))
    assert torch.allclose(grads[0], grads[1], atol=1e-12)
    assert torch.allclose(last.weight, before - 0.1 * grads[0], atol=1e-12)
    held = {id(p) for g in integrator.param_groups for p in g["params"]}
    assert not held & {id(u) for layer in factorized_layers(model).values() for u in layer.factors}


def test_truncation_error_within_hosvd_bound():
    """With lr = 0, ‖W_before − W_after‖_F ≤ sqrt(Σ tail_i²) ≤ sqrt(|A|)·τ‖C̃‖_F (spec §7.4)."""
    model = tiny_model(tucker_min_rank=1, matrix_min_rank=1)
    tau = 0.35
    integrator = TDLRT(model, sgd(0.0), tau=tau)
    layers = factorized_layers(model)
    before = {n: layer.dense_weight().detach().clone() for n, layer in layers.items()}
    integrator.step(closure_for(model, *batch()))
    assert integrator.ranks() != {n: layer.max_ranks for n, layer in layers.items()}
    for name, layer in layers.items():
        info = integrator.last_truncation[name]
        error = float(torch.linalg.vector_norm(before[name] - layer.dense_weight().detach()))
        tails = math.sqrt(sum(t * t for t in info["tails"].values()))
        assert error <= tails + 1e-10
        assert tails <= math.sqrt(len(layer.adaptive_modes)) * tau * info["core_norm"] + 1e-10


def test_tiny_tolerance_keeps_exact_multilinear_rank():
    """τ ≈ 0 and lr = 0: the augmented core has multilinear rank r, so ranks and weights return unchanged."""
    model = tiny_model(rank_fraction=0.4, tucker_min_rank=1)
    integrator = TDLRT(model, sgd(0.0), tau=1e-9)
    ranks = integrator.ranks()
    layers = factorized_layers(model)
    before = {n: layer.dense_weight().detach().clone() for n, layer in layers.items()}
    integrator.step(closure_for(model, *batch()))
    assert integrator.ranks() == ranks
    for name, layer in layers.items():
        assert (before[name] - layer.dense_weight()).abs().max() < 1e-10


def _dense_state(layer, state: torch.Tensor) -> torch.Tensor:
    return multi_mode_product(state, {i: u.detach() for i, u in enumerate(layer.factors)})


def test_momentum_transport_in_dense_coordinates():
    """Dense momentum b ×_i U_i is unchanged by augmentation and by a τ = 0 truncation (spec §7.6)."""
    model = tiny_model(rank_fraction=0.4)
    integrator = TDLRT(model, sgd(0.05, momentum=0.9), tau=0.0)
    layers = factorized_layers(model)

    def buffers():
        return {n: integrator.optimizer.state[layer.core]["momentum_buffer"] for n, layer in layers.items()}

    integrator.step(closure_for(model, *batch(0)))
    previous = {n: _dense_state(layers[n], b) for n, b in buffers().items()}
    grads = {}

    def log(_):
        if grads.get("calls", 0) == 1:  # pass 2: state already transported into the augmented basis
            for name, buffer in buffers().items():
                assert (_dense_state(layers[name], buffer) - previous[name]).abs().max() < 1e-10
                grads[name] = _dense_state(layers[name], layers[name].core.grad)
        grads["calls"] = grads.get("calls", 0) + 1

    integrator.step(closure_for(model, *batch(1), log))
    for name, buffer in buffers().items():
        expected = 0.9 * previous[name] + grads[name]
        assert (_dense_state(layers[name], buffer) - expected).abs().max() < 1e-10


def _quadratic_layer(cls):
    torch.manual_seed(3)
    if cls is TuckerFactorizedConv2d:
        return TuckerFactorizedConv2d(
            6, 5, 3, ranks=(2, 2, 3, 3), max_rank_fraction=1.0, min_rank=1, dtype=F64
        )
    return MatrixFactorizedLinear(7, 6, ranks=2, max_rank_fraction=1.0, min_rank=2, dtype=F64)


@pytest.mark.parametrize("cls", [TuckerFactorizedConv2d, MatrixFactorizedLinear])
def test_descent_on_convex_quadratic(cls):
    """For L(W) = ½‖W − T‖² and a small lr, one step with τ = 0 lowers the loss (spec §7.7)."""
    layer = _quadratic_layer(cls)
    target = torch.randn(layer.dense_weight().shape, dtype=F64)

    def closure():
        loss = 0.5 * (layer.dense_weight() - target).square().sum()
        loss.backward()
        return loss

    integrator = TDLRT(layer, sgd(0.1), tau=0.0)
    first = float(integrator.step(closure))
    second = float(integrator.step(closure))
    assert second < first
    assert float(0.5 * (layer.dense_weight().detach() - target).square().sum()) < second


@pytest.mark.parametrize("cls", [TuckerFactorizedConv2d, MatrixFactorizedLinear])
def test_linear_loss_identity(cls):
    """L = ⟨A, W⟩, SGD, τ = 0: the new weight is W − λ·A ×_i Ũ_iŨ_iᵀ and ranks double (spec §7.9)."""
    layer = _quadratic_layer(cls)
    direction = torch.randn(layer.dense_weight().shape, dtype=F64)
    weight = layer.dense_weight().detach().clone()
    widths = layer.augmented_ranks()

    def closure():
        loss = (direction * layer.dense_weight()).sum()
        loss.backward()
        return loss

    TDLRT(layer, sgd(0.2), tau=0.0).step(closure)
    assert layer.ranks == widths
    projectors = {m: layer.factors[m] @ layer.factors[m].T for m in layer.adaptive_modes}
    expected = weight - 0.2 * multi_mode_product(direction, projectors)
    assert (layer.dense_weight() - expected).abs().max() < 1e-10
    assert min(layer.ranks) >= 2


def test_parallel_bug_blocks():
    """Parallel BUG, τ = 0: λ = 0 keeps W; the old-old block of the new core equals C − λ∇_C L (§7.8)."""
    target = torch.randn(5, 6, 3, 3, dtype=F64)
    for lr in (0.0, 0.3):
        layer = _quadratic_layer(TuckerFactorizedConv2d)
        probe = copy.deepcopy(layer)
        (0.5 * (probe.dense_weight() - target).square().sum()).backward()
        old_core, old_factors = layer.core.detach().clone(), [u.detach().clone() for u in layer.factors]
        weight = layer.dense_weight().detach().clone()

        def closure(layer=layer):
            loss = 0.5 * (layer.dense_weight() - target).square().sum()
            loss.backward()
            return loss

        TDLRT(layer, sgd(lr), tau=0.0, variant="parallel").step(closure)
        after = layer.dense_weight().detach()
        if lr == 0.0:
            assert (after - weight).abs().max() < 1e-10
        else:
            assert layer.ranks[:2] == (4, 4)
        old_block = multi_mode_product(after, {i: u.T for i, u in enumerate(old_factors)})
        assert (old_block - (old_core - lr * probe.core.grad)).abs().max() < 1e-10


def test_fixed_rank_policy_keeps_ranks():
    """rank_policy='fixed' never changes ranks, keeps factors orthonormal, and moves bases even at r_max."""
    model = tiny_model()
    integrator = TDLRT(model, sgd(0.1, 0.9), tau=0.5, rank_policy="fixed")
    ranks = integrator.ranks()
    assert ranks == {name: layer.max_ranks for name, layer in factorized_layers(model).items()}
    bases = [u.detach().clone() for layer in factorized_layers(model).values() for u in layer.factors[:2]]
    for step in range(3):
        integrator.step(closure_for(model, *batch(step)))
        assert integrator.ranks() == ranks
    assert all(ortho_error(u) < 1e-10 for layer in factorized_layers(model).values() for u in layer.factors)
    moved = [u.detach() for layer in factorized_layers(model).values() for u in layer.factors[:2]]
    assert all((a @ a.T - b @ b.T).abs().max() > 1e-6 for a, b in zip(bases, moved, strict=True))


def test_grad_reducer_sees_every_used_gradient():
    """The reducer runs after each backward; zeroing every gradient freezes the model (SGD, no momentum)."""
    model = tiny_model()
    calls = []

    def reducer(grads):
        calls.append(len(grads))
        for g in grads:
            g.zero_()

    integrator = TDLRT(model, sgd(0.1), tau=0.0, grad_reducer=reducer)
    layers = factorized_layers(model)
    before = {n: layer.dense_weight().detach().clone() for n, layer in layers.items()}
    integrator.step(closure_for(model, *batch()))
    assert calls == [2 * len(layers), len(integrator.stepped_parameters)]
    for name, layer in layers.items():
        assert (before[name] - layer.dense_weight()).abs().max() < 1e-10


def test_bad_configurations_rejected():
    """Factors in the inner optimizer, vanilla layers, unknown options and plain models raise ValueError."""
    model = tiny_model()
    with pytest.raises(ValueError, match="factor"):
        TDLRT(model, lambda params: torch.optim.SGD(list(model.parameters()), lr=0.1))
    with pytest.raises(ValueError, match="variant"):
        TDLRT(model, sgd(), variant="three_pass")
    with pytest.raises(ValueError, match="no factorized layer"):
        TDLRT(nn.Linear(3, 3), sgd())
    vanilla = tiny_model(free_factors=True)
    with pytest.raises(ValueError, match="free_factors"):
        TDLRT(vanilla, sgd())


@pytest.mark.parametrize("variant", ["two_pass", "parallel", "local"])
def test_bfloat16_parameters_use_float32_linear_algebra(variant):
    """With bfloat16 parameters a step runs (QR/SVD promoted to float32), keeping bfloat16 parameters."""
    model = tiny_model().to(torch.bfloat16)
    integrator = TDLRT(model, sgd(0.1, 0.9), tau=0.3, variant=variant)
    x, y = batch()
    integrator.step(closure_for(model, x.to(torch.bfloat16), y))
    for layer in factorized_layers(model).values():
        assert layer.core.dtype == torch.bfloat16
        assert all(u.dtype == torch.bfloat16 and ortho_error(u.float()) < 2e-2 for u in layer.factors)


def _without_noise(model: nn.Module) -> nn.Module:
    """The tiny model without BatchNorm and dropout, whose state the two-pass step handles specially."""
    for index, module in enumerate(model):
        if isinstance(module, nn.BatchNorm2d | nn.Dropout):
            model[index] = nn.Identity()
    return model


def test_local_cycle_of_two_on_one_batch_is_the_two_pass_step():
    """Augmented BUG with local S-iterations (spec §2.10) with a cycle of 2 batches, both the same batch,
    performs exactly the two-pass step on that batch: augment from the first gradient, one step at the
    augmented ranks, truncate to the tolerance.
    """
    two_pass = _without_noise(tiny_model())
    local = copy.deepcopy(two_pass)
    a = TDLRT(two_pass, sgd(0.1, 0.9), tau=0.3)
    b = TDLRT(local, sgd(0.1, 0.9), tau=0.3, variant="local", local_steps=2)
    for step in range(3):
        x, y = batch(step)
        a.step(closure_for(two_pass, x, y))
        b.step(closure_for(local, x, y))
        assert b.cycle_ranks is not None
        b.step(closure_for(local, x, y))
        assert b.cycle_ranks is None
        assert b.ranks() == a.ranks()
        for (name, p), q in zip(two_pass.state_dict().items(), local.state_dict().values(), strict=True):
            assert torch.equal(p, q), name


def test_local_cycle_freezes_bases_and_changes_ranks_only_at_its_ends():
    """Inside a cycle of 4 batches the factors are frozen and the ranks are the augmented ones; the first
    batch changes no represented weight and no non-factorized parameter (it only augments); the middle
    ones step; the last one truncates.
    """
    model = _without_noise(tiny_model())
    integrator = TDLRT(model, sgd(0.05, 0.9), tau=0.2, variant="local", local_steps=4)
    layers = factorized_layers(model)
    start_ranks = integrator.ranks()

    def plain_parameters():
        return {
            n: p.detach().clone()
            for n, p in model.named_parameters()
            if ".factors." not in n and not n.endswith("core")
        }

    for step in range(8):
        position = step % 4
        factors = {n: [u.detach().clone() for u in layer.factors] for n, layer in layers.items()}
        weights = {n: layer.dense_weight().detach().clone() for n, layer in layers.items()}
        before = plain_parameters()
        integrator.step(closure_for(model, *batch(step)))
        after = plain_parameters()
        if position == 0:
            assert integrator.cycle_ranks == start_ranks
            for name, layer in layers.items():
                assert all(a >= b for a, b in zip(layer.ranks, start_ranks[name], strict=True))
                torch.testing.assert_close(layer.dense_weight(), weights[name], rtol=0, atol=1e-12)
            assert all(torch.equal(after[n], before[n]) for n in before)
        elif position < 3:
            for name, layer in layers.items():
                assert all(torch.equal(u, v) for u, v in zip(layer.factors, factors[name], strict=True))
            assert all(not torch.equal(after[n], before[n]) for n in before)
        else:
            assert integrator.cycle_ranks is None
            start_ranks = integrator.ranks()
        for layer in layers.values():
            assert all(ortho_error(u) < 1e-10 for u in layer.factors)


def test_faithful_qr_selection_flips_capped_bases_like_robustdlrt():
    """Every layer starts at r_max, so with ``aug_cap="rmax"`` no mode can grow; with ``aug_select=
    "qr_columns"`` the augmentation still replaces each adaptive basis by the first r columns of
    QR([U | −∇_U L]), as RobustDLRT does (the column signs matter to Adam's second-moment transport).
    """
    model = _without_noise(tiny_model())
    x, y = batch(0)
    probe = copy.deepcopy(model)
    closure_for(probe, x, y)()
    expected = {
        (name, mode): torch.linalg.qr(torch.cat([u.detach(), -u.grad], dim=1))[0][:, : u.shape[1]]
        for name, layer in factorized_layers(probe).items()
        for mode, u in enumerate(layer.factors)
        if mode in layer.adaptive_modes
    }
    adam = lambda params: torch.optim.Adam(params, lr=1e-3)  # noqa: E731
    integrator = TDLRT(model, adam, tau=0.1, variant="local", local_steps=3, aug_select="qr_columns")
    before = integrator.ranks()
    integrator.step(closure_for(model, x, y))  # first batch of a cycle: augmentation only
    assert integrator.ranks() == before
    flipped = 0
    for (name, mode), q in expected.items():
        u = factorized_layers(model)[name].factors[mode].detach()
        torch.testing.assert_close(u, q, rtol=0, atol=1e-12)
        flipped += int(not torch.allclose(u, factorized_layers(probe)[name].factors[mode].detach()))
    assert flipped > 0

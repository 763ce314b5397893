"""The three-pass KLS step of matrix DLRT (``passes=3``), pinned against a transcription of DLRT-Net."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from slimtrain.lowrank import TDLRT, TDLRTConfig, convert_to_lowrank, factorized_layers

F64 = torch.float64
# The DLRT-Net configurations: plain SGD with momentum 0.1 on K, L and S; augmentation to 2r, its truncation.
KLS = {"passes": 3, "aug_cap": "n", "truncation": "dlrt_net", "tau": 0.15}


def mlp() -> nn.Sequential:
    """8 → 10 → 6 → 3 with tanh; the two hidden linears become U S Vᵀ at r_max (4 and 3)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 10), nn.Tanh(), nn.Linear(10, 6), nn.Tanh(), nn.Linear(6, 3)).to(F64)
    convert_to_lowrank(model, init="from_weights")
    return model


def batch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(32, 8, generator=gen, dtype=F64), torch.randint(0, 3, (32,), generator=gen)


def closure_for(model, x, y):
    def closure():
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss

    return closure


def sgd(lr, momentum):
    return lambda params: torch.optim.SGD(params, lr=lr, momentum=momentum)


def dense_weights(model) -> list[torch.Tensor]:
    return [layer.dense_weight().detach().clone() for layer in factorized_layers(model).values()]


class KLSTranscription:
    """DLRT-Net's KLS step (``optimizer_KLS/dlrt_optimizer.py``) written out on explicit matrices.

    Per batch: ``K = US``, ``L = VSᵀ``; SGD with momentum steps K and L (their own buffers);
    ``Û = qr([K₁ | U])``, ``V̂ = qr([L₁ | V])``; ``S̃ = (ÛᵀU) S (V̂ᵀV)ᵀ``; SGD steps S̃ and every other
    parameter on the same batch; SVD of S̃₁ with the DLRT-Net tail rule; ``U ← Û P_r``, ``V ← V̂ Q_r`` (the
    correct V, not the reference's Vᴴ). DLRT-Net keeps its buffers in fixed r_max storage; here they are
    carried to each new basis (slimtrain's ``state_transport="rotate"``), which makes the result independent
    of the signs and order of the bases, so the two implementations can be compared weight for weight.
    """

    def __init__(self, model: nn.Sequential, lr: float, momentum: float, tau: float) -> None:
        self.lr, self.mu, self.tau = lr, momentum, tau
        self.layers = []
        for layer in (model[0], model[2]):
            u, v = (f.detach().clone() for f in layer.factors)
            self.layers.append({"U": u, "S": layer.core.detach().clone(), "V": v, "rmax": layer.max_ranks[0]})
        self.others = [model[0].bias, model[2].bias, model[4].weight, model[4].bias]
        self.others = [p.detach().clone() for p in self.others]
        self.buffers: dict[object, torch.Tensor] = {}

    def _dense_grads(self, x, y) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        weights = [(lay["U"] @ lay["S"] @ lay["V"].T).requires_grad_() for lay in self.layers]
        others = [p.clone().requires_grad_() for p in self.others]
        b1, b2, w3, b3 = others
        hidden = torch.tanh(torch.tanh(x @ weights[0].T + b1) @ weights[1].T + b2)
        loss = F.cross_entropy(hidden @ w3.T + b3, y)
        grads = torch.autograd.grad(loss, weights + others)
        return list(grads[:2]), list(grads[2:])

    def _momentum(self, key, grad: torch.Tensor) -> torch.Tensor:
        buf = self.buffers.get(key)
        self.buffers[key] = grad.clone() if buf is None else self.mu * buf + grad
        return self.buffers[key]

    def step(self, x, y) -> None:
        grads, _ = self._dense_grads(x, y)
        for i, (lay, g) in enumerate(zip(self.layers, grads, strict=True)):
            u, s, v = lay["U"], lay["S"], lay["V"]
            k1 = u @ s - self.lr * self._momentum(("K", i), g @ v)
            l1 = v @ s.T - self.lr * self._momentum(("L", i), g.T @ u)
            u_hat = torch.linalg.qr(torch.cat([k1, u], dim=1))[0]
            v_hat = torch.linalg.qr(torch.cat([l1, v], dim=1))[0]
            m, n = u_hat.T @ u, v_hat.T @ v
            lay.update(U_old=u, V_old=v, U=u_hat, V=v_hat, S=m @ s @ n.T)
            if ("S", i) in self.buffers:
                self.buffers[("S", i)] = m @ self.buffers[("S", i)] @ n.T
        grads, other_grads = self._dense_grads(x, y)  # the S pass, on the same batch
        for i, (lay, g) in enumerate(zip(self.layers, grads, strict=True)):
            lay["S"] = lay["S"] - self.lr * self._momentum(("S", i), lay["U"].T @ g @ lay["V"])
        for j, g in enumerate(other_grads):
            self.others[j] = self.others[j] - self.lr * self._momentum(("P", j), g)
        for i, lay in enumerate(self.layers):
            p, d, qh = torch.linalg.svd(lay["S"])
            q = qh.T
            r = d.shape[0] // 2
            rank = r  # DLRT-Net: no qualifying j keeps the old rank; the tail omits the last value
            for j in range(2 * r - 1):
                if torch.linalg.vector_norm(d[j : 2 * r - 1]) < self.tau * torch.linalg.vector_norm(d):
                    rank = j
                    break
            rank = max(min(rank, lay["rmax"]), 2)
            lay.update(U=lay["U"] @ p[:, :rank], V=lay["V"] @ q[:, :rank], S=torch.diag(d[:rank]))
            self.buffers[("S", i)] = p[:, :rank].T @ self.buffers[("S", i)] @ q[:, :rank]
            self.buffers[("K", i)] = self.buffers[("K", i)] @ lay["V_old"].T @ lay["V"]
            self.buffers[("L", i)] = self.buffers[("L", i)] @ lay["U_old"].T @ lay["U"]

    def dense_weights(self) -> list[torch.Tensor]:
        return [lay["U"] @ lay["S"] @ lay["V"].T for lay in self.layers]


def test_three_pass_step_matches_the_dlrt_net_transcription():
    """Three KLS steps with momentum 0.1 on K, L and S reach the weights, biases and ranks of the
    transcription of DLRT-Net's step (to rounding).
    """
    model = mlp()
    reference = KLSTranscription(model, lr=0.2, momentum=0.1, tau=KLS["tau"])
    integrator = TDLRT(model, sgd(0.2, 0.1), **KLS)
    for step in range(3):
        x, y = batch(step)
        integrator.step(closure_for(model, x, y))
        reference.step(x, y)
        ranks = [layer.ranks for layer in factorized_layers(model).values()]
        assert ranks == [(lay["S"].shape[0],) * 2 for lay in reference.layers]
        for got, want in zip(dense_weights(model), reference.dense_weights(), strict=True):
            torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
        others = [model[0].bias, model[2].bias, model[4].weight, model[4].bias]
        for got, want in zip(others, reference.others, strict=True):
            torch.testing.assert_close(got.detach(), want, rtol=0, atol=1e-12)
    assert any(r < (4, 4) for r in ranks)  # the tolerance has truncated


@pytest.mark.parametrize("momentum", [0.0, 0.1])
def test_three_passes_differ_from_two_only_through_momentum_on_k_and_l(momentum):
    """Without momentum K₁ = US − λ∇_K L spans what the two-pass basis gradient spans, so both forms take
    the same steps; with momentum 0.1 the first step still agrees (the first buffer is the gradient) and
    the second does not.
    """
    three = mlp()
    two = copy.deepcopy(three)
    a = TDLRT(three, sgd(0.2, momentum), **KLS)
    b = TDLRT(two, sgd(0.2, momentum), **{**KLS, "passes": 2})
    gaps = []
    for step in range(2):
        x, y = batch(step)
        a.step(closure_for(three, x, y))
        b.step(closure_for(two, x, y))
        gap = max(
            float((p - q).abs().max()) for p, q in zip(dense_weights(three), dense_weights(two), strict=True)
        )
        gaps.append(gap)
    assert gaps[0] < 1e-12
    assert (gaps[1] < 1e-12) == (momentum == 0.0)
    if momentum:
        assert gaps[1] > 1e-5


def test_k_and_l_get_their_own_optimizer_state_carried_through_rank_changes():
    """The inner optimizer holds one K and one L parameter per layer after the stepped ones; their
    momentum buffers exist after a step and always have the shape of the current ``US`` and ``VSᵀ``.
    """
    model = mlp()
    integrator = TDLRT(model, sgd(0.2, 0.1), **KLS)
    (group,) = integrator.optimizer.param_groups
    kls = [p for pair in integrator.kls_parameters.values() for p in pair]
    assert group["params"][-len(kls) :] == kls
    for step in range(3):
        integrator.step(closure_for(model, *batch(step)))
        for name, layer in factorized_layers(model).items():
            u, v = layer.factors
            values = (u.detach() @ layer.core.detach(), v.detach() @ layer.core.detach().T)
            for param, value in zip(integrator.kls_parameters[name], values, strict=True):
                torch.testing.assert_close(param.detach(), value.detach(), rtol=0, atol=1e-12)
                assert integrator.optimizer.state[param]["momentum_buffer"].shape == param.shape


def test_three_passes_are_refused_where_they_do_not_apply():
    """passes=3 needs the two-pass variant and matrix layers (a Tucker convolution is named)."""
    with pytest.raises(ValueError, match="passes"):
        TDLRTConfig(passes=3, variant="local")
    with pytest.raises(ValueError, match="passes"):
        TDLRTConfig(passes=4)
    model = nn.Sequential(nn.Conv2d(2, 6, 3), nn.Conv2d(6, 8, 3), nn.Flatten(), nn.Linear(8, 3))
    convert_to_lowrank(model, keep_first_conv_dense=False)
    with pytest.raises(ValueError, match=r"'0'.*TuckerFactorizedConv2d"):
        TDLRT(model, sgd(0.1, 0.0), passes=3)


@pytest.mark.parametrize(("passes", "every_pass"), [(2, False), (2, True), (3, False), (3, True)])
def test_batchnorm_statistics_are_updated_once_or_in_every_pass(passes, every_pass):
    """BatchNorm running means move once per batch by default, and once per pass (2 or 3 times, all on the
    same batch) with ``update_bn_in_basis_pass=True``, as DLRT-Net does.
    """
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 10), nn.BatchNorm1d(10), nn.Tanh(), nn.Linear(10, 3)).to(F64)
    convert_to_lowrank(model, init="from_weights")
    bn = model[1]
    x, y = batch(0)
    with torch.no_grad():
        batch_mean = model[0](x).mean(dim=0)
    options = {**KLS, "passes": passes, "update_bn_in_basis_pass": every_pass}
    TDLRT(model, sgd(0.0, 0.0), **options).step(closure_for(model, x, y))  # lr 0: the weights stay put
    updates = passes if every_pass else 1
    expected = batch_mean * (1 - (1 - bn.momentum) ** updates)  # from a running mean of 0
    torch.testing.assert_close(bn.running_mean, expected, rtol=1e-10, atol=1e-12)

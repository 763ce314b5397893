"""The prunable population's one registry (slimtrain.layers.prunable) and everything that reads it.

Counts are literal hand counts of each layer's weights, never slimtrain's own counting.
"""

from __future__ import annotations

import math
import os

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations

from slimtrain import compress, metrics
from slimtrain.errors import UnsupportedModelError
from slimtrain.layers.prunable import PRUNABLE_TYPES, prunable_weights, register_prunable
from slimtrain.methods.masked import magnitude_masks
from slimtrain.swd import MagnitudeSelection, SelectiveWeightDecay


class Conv1D(nn.Module):
    """A stand-in for transformers' Conv1D (a transposed Linear: weight is in × out)."""

    def __init__(self, nf: int, nx: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(nx, nf))
        self.bias = nn.Parameter(torch.randn(nf))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight).reshape(*x.shape[:-1], -1)


Conv1D.__module__ = "transformers.pytorch_utils"
Conv1D.__qualname__ = "Conv1D"


class _GPTBlock(Conv1D):
    """A subclass: recognised through the MRO."""


# registry key → (module, hand count of its prunable entries)
CASES = {
    nn.modules.conv._ConvNd: (lambda: nn.ConvTranspose2d(3, 4, 3), 3 * 4 * 9),
    nn.Linear: (lambda: nn.Linear(5, 7), 35),
    # 2 layers × 2 directions × (4·H·in + 4·H·proj) with H=6, proj 3: in = 5, then 2·3; hr = 3·6 each
    nn.RNNBase: (
        lambda: nn.LSTM(5, 6, num_layers=2, bidirectional=True, proj_size=3),
        2 * (24 * 5 + 24 * 3 + 3 * 6) + 2 * (24 * 6 + 24 * 3 + 3 * 6),
    ),
    nn.RNNCellBase: (lambda: nn.GRUCell(5, 6), 18 * 5 + 18 * 6),
    # in_proj 3·8×8 plus out_proj (an nn.Linear) 8×8
    nn.MultiheadAttention: (lambda: nn.MultiheadAttention(8, 2), 3 * 64 + 64),
    "transformers.pytorch_utils.Conv1D": (lambda: _GPTBlock(6, 4), 24),
}


def test_every_registry_entry_has_a_case():
    """Every rule slimtrain registers (torch classes, qualified names) has a hand-counted case below."""
    own = {k for k in PRUNABLE_TYPES if isinstance(k, str) or k.__module__.startswith("torch.")}
    assert set(CASES) == own


@pytest.mark.parametrize("key", list(CASES), ids=str)
def test_registry_entry_counts_and_masks(key):
    torch.manual_seed(0)
    build, hand_count = CASES[key]
    module = build()
    weights = prunable_weights(module)
    assert sum(w.numel() for w in weights.values()) == hand_count
    assert metrics.count_parameters(module, "prunable").dense == hand_count
    pruned = compress.global_magnitude_prune(module, 0.5)
    zeros = sum(int((w == 0).sum()) for w in prunable_weights(pruned).values())
    assert zeros == math.floor(0.5 * hand_count)
    assert metrics.count_parameters(pruned, "prunable").nonzero == hand_count - zeros


def test_rnn_weights_every_layer_and_direction():
    names = set(prunable_weights(nn.GRU(3, 4, num_layers=2, bidirectional=True)))
    assert names == {f"weight_{k}_l{i}{d}" for k in ("ih", "hh") for i in (0, 1) for d in ("", "_reverse")}


def test_attention_with_other_key_size_uses_separate_projections():
    mha = nn.MultiheadAttention(8, 2, kdim=3, vdim=5)
    weights = prunable_weights(mha)
    assert set(weights) == {"q_proj_weight", "k_proj_weight", "v_proj_weight", "out_proj.weight"}
    assert sum(w.numel() for w in weights.values()) == 64 + 8 * 3 + 8 * 5 + 64


def test_swd_prunes_rnn_and_attention_exactly():
    torch.manual_seed(0)
    model = nn.ModuleDict({"rnn": nn.LSTM(4, 5), "attn": nn.MultiheadAttention(8, 2)})
    n = 4 * 5 * 4 + 4 * 5 * 5 + 3 * 64 + 64
    swd = SelectiveWeightDecay(MagnitudeSelection(700), weight_decay=5e-4, total_steps=1)
    swd.prune(model)
    assert sum(int((w == 0).sum()) for w in prunable_weights(model).values()) == math.floor(0.7 * n)


def test_tied_weight_is_one_member_prunable_by_any_alias():
    embed = nn.Embedding(10, 4)
    head = nn.Linear(4, 10, bias=False)
    head.weight = embed.weight
    model = nn.Sequential(embed, head)
    assert list(prunable_weights(model)) == ["0.weight"]
    assert metrics.count_parameters(model, "prunable").dense == 40


def test_parametrized_weight_pruned_exactly_and_left_plain():
    """Magnitude pruning prunes the effective weight; the copy holds it as a plain weight, same outputs."""
    torch.manual_seed(0)
    model = nn.Sequential(parametrizations.weight_norm(nn.Linear(6, 5)), nn.ReLU(), nn.Linear(5, 2))
    assert metrics.count_parameters(model, "all").dense == 5 + 30 + 5 + 12  # g, v, bias; second layer
    assert metrics.count_parameters(model, "prunable").dense == 30 + 10
    effective = model[0].weight.detach().clone()
    pruned = compress.global_magnitude_prune(model, 0.5)
    assert isinstance(pruned[0].weight, nn.Parameter) and type(pruned[0]) is nn.Linear
    keep = pruned[0].weight != 0
    assert torch.equal(pruned[0].weight.detach(), effective * keep)  # the kept entries are unchanged
    zeros = sum(int((w == 0).sum()) for w in prunable_weights(pruned).values())
    assert zeros == 20
    x = torch.randn(3, 6)
    masked = pruned[2](torch.relu(nn.functional.linear(x, effective * keep, model[0].bias)))
    torch.testing.assert_close(pruned(x), masked)
    model[0].weight  # the original keeps its parametrization  # noqa: B018
    assert type(model[0]).__name__ == "ParametrizedLinear"


def test_swd_penalises_a_parametrized_weight_and_prunes_it_exactly():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 6), parametrizations.weight_norm(nn.Linear(6, 4)))
    swd = SelectiveWeightDecay(MagnitudeSelection(500), weight_decay=0.1, total_steps=1, a_min=1.0, a_max=1.0)

    def grads() -> dict[str, torch.Tensor]:
        return {
            n: torch.zeros_like(p) if p.grad is None else p.grad.clone() for n, p in model.named_parameters()
        }

    swd.penalty(model).backward()
    by_penalty = grads()
    model.zero_grad(set_to_none=True)
    swd.apply_(model)
    by_hook = grads()
    for name, grad in by_penalty.items():
        torch.testing.assert_close(by_hook[name], grad)
    assert by_hook["1.parametrizations.weight.original0"].abs().sum() > 0  # g, through the parametrization
    effective = model[1].weight.detach().clone()
    masks = swd.prune(model)
    assert type(model[1]) is nn.Linear and torch.equal(
        model[1].weight.detach(), effective * masks["1.weight"]
    )
    assert sum(int((w == 0).sum()) for w in prunable_weights(model).values()) == (18 + 24) // 2


def test_shrink_and_masked_baselines_refuse_a_parametrized_weight_naming_it():
    model = nn.Sequential(nn.Linear(3, 3), parametrizations.weight_norm(nn.Linear(3, 2)))
    swd = SelectiveWeightDecay(MagnitudeSelection(500), weight_decay=5e-4, total_steps=1)
    with pytest.raises(UnsupportedModelError, match=r"'1' \(ParametrizedLinear\).*remove_parametrizations"):
        swd.shrink_(model, lr=0.1)
    with pytest.raises(UnsupportedModelError, match=r"'1' \(ParametrizedLinear\).*remove_parametrizations"):
        magnitude_masks(model, 0.5)


def test_register_prunable_by_qualified_name(monkeypatch):
    class Gate(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.kernel = nn.Parameter(torch.ones(3, 3))

    monkeypatch.setitem(PRUNABLE_TYPES, f"{Gate.__module__}.{Gate.__qualname__}", lambda m: ("kernel",))
    assert list(prunable_weights(Gate())) == ["kernel"]
    with pytest.raises(TypeError):
        register_prunable(3, lambda m: ())  # type: ignore[arg-type]


def test_real_transformers_conv1d():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    pytorch_utils = pytest.importorskip("transformers.pytorch_utils")
    layer = pytorch_utils.Conv1D(6, 4)  # nf=6 outputs, nx=4 inputs
    assert sum(w.numel() for w in prunable_weights(layer).values()) == 24
    assert metrics.count_parameters(layer, "prunable").dense == 24
    pruned = compress.global_magnitude_prune(layer, 0.25)
    assert int((pruned.weight == 0).sum()) == 6


def _weight_normed() -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    parametrizations.weight_norm(model[0])
    return model


def test_swd_penalises_and_prunes_a_parametrized_weight_outside_autograd():
    """SWD's apply_ and final pruning run under no_grad, where a computed weight has requires_grad=False:
    the weight still counts as trainable (its originals are), gets the penalty's gradient and is pruned.
    """
    from slimtrain.swd import population_weights, prune_to_target

    model = _weight_normed()
    with torch.no_grad():
        assert list(population_weights(model)) == ["0.weight", "2.weight"]
    model(torch.randn(3, 8)).sum().backward()
    SelectiveWeightDecay(MagnitudeSelection(500), weight_decay=1.0, total_steps=1).apply_(model)
    assert model[0].parametrizations.weight.original1.grad is not None
    prune_to_target(model, 500.0)
    zeros = int((model[0].weight == 0).sum()) + int((model[2].weight == 0).sum())
    assert zeros == math.floor(0.5 * (64 + 16))


def test_frozen_weights_are_out_of_the_training_population_only():
    """Training methods leave frozen weights alone; post-training pruning counts every weight."""
    from slimtrain.swd import population_weights

    model = _weight_normed()
    model[2].requires_grad_(False)
    assert list(population_weights(model)) == ["0.weight"]
    assert list(prunable_weights(model)) == ["0.weight", "2.weight"]


def test_a_weight_computed_by_an_unknown_hook_is_refused_naming_the_module():
    """The deprecated hook-based torch.nn.utils.weight_norm cannot be recomputed or folded: refused."""
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    torch.nn.utils.weight_norm(model[0])
    model(torch.randn(3, 8))
    with pytest.raises(UnsupportedModelError, match=r"module '0'.*Linear.*parametrizations\.weight_norm"):
        compress.global_magnitude_prune(model, 0.5)


def test_swd_apply_recomputes_a_pruning_hook_weight():
    """A torch.nn.utils.prune weight cached by the last forward is recomputed, not backpropagated twice."""
    from torch.nn.utils import prune

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    prune.random_unstructured(model[0], "weight", 0.25)
    model(torch.randn(3, 8)).sum().backward()
    SelectiveWeightDecay(MagnitudeSelection(500), weight_decay=1.0, total_steps=1).apply_(model)
    assert model[0].weight_orig.grad is not None


def test_a_weight_normed_rnn_weight_is_copied_by_the_operators():
    """The RNN keeps its computed weights in a list: copying the model (every operator does) must work."""
    lstm = nn.LSTM(4, 4)
    parametrizations.weight_norm(lstm, "weight_hh_l0")
    x = torch.randn(3, 2, 4)
    pruned = compress.global_magnitude_prune(lstm, 0.5)
    assert pruned(x)[0].shape == lstm(x)[0].shape


def test_swd_refuses_the_hook_based_weight_norm_instead_of_dropping_it():
    from slimtrain.swd import population_weights

    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    torch.nn.utils.weight_norm(model[0])
    model(torch.randn(3, 8))
    with pytest.raises(UnsupportedModelError, match=r"module '0'"):
        population_weights(model)


def test_a_weight_held_as_a_buffer_is_pruned_as_a_plain_tensor():
    """Not a parameter, not computed either (a buffer, or a weight inside torch.func.functional_call)."""
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 2))
    weight = model[0].weight.detach().clone()
    del model[0].weight
    model[0].register_buffer("weight", weight)
    assert list(prunable_weights(model)) == ["0.weight", "1.weight"]


def test_prox_svd_refuses_a_parametrized_conv_it_could_not_write():
    from slimtrain.pruning.baselines import singular_value_soft_threshold_

    model = nn.Sequential(nn.Conv2d(3, 8, 3))
    parametrizations.weight_norm(model[0])
    with pytest.raises(UnsupportedModelError, match=r"'0'.*plain parameter"):
        singular_value_soft_threshold_(model, 5.0)


def test_maskset_attach_refuses_a_computed_weight():
    from slimtrain.pruning import MaskSet

    model = _weight_normed()
    masks = {"0.weight": torch.ones(8, 8, dtype=torch.bool)}
    with pytest.raises(UnsupportedModelError, match=r"'0.weight'.*apply_\(\) first"):
        MaskSet(model, masks).attach(torch.optim.SGD(model.parameters(), lr=0.1))

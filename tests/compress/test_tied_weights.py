"""Shared (tied) parameters: counted once, pruned consistently, kept tied through export, save and load."""

import math

import pytest
import safetensors.torch
import torch
from torch import nn

import slimtrain
from slimtrain import compress, metrics
from slimtrain.errors import UnsupportedModelError
from slimtrain.lowrank import convert_to_lowrank
from slimtrain.swd import MagnitudeSelection, prune_to_target


class TiedLM(nn.Module):
    """Embedding(50, 16) → Linear(16, 16) → Linear(16, 50) whose weight is the embedding's."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(50, 16)
        self.mid = nn.Linear(16, 16)
        self.head = nn.Linear(16, 50)
        self.head.weight = self.emb.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.mid(self.emb(x))))


class SharedLinears(nn.Module):
    """Two Linear(8, 8) sharing one weight (own biases), then Linear(8, 4)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(8, 8)
        self.b = nn.Linear(8, 8)
        self.b.weight = self.a.weight
        self.c = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(torch.relu(self.b(torch.relu(self.a(x)))))


# Hand counts. TiedLM prunable: mid 16·16 + the tied 50·16 once; all: + mid bias 16 + head bias 50.
# SharedLinears prunable: the shared 8·8 once + c 4·8; all: + biases 8 + 8 + 4.
CASES = {
    "tied_lm": (TiedLM, lambda: torch.randint(0, 50, (3, 5)), 256 + 800, 1056 + 16 + 50, ("head", "emb")),
    "shared_linears": (SharedLinears, lambda: torch.randn(3, 8), 64 + 32, 64 + 32 + 20, ("a", "b")),
}


def _zeros(model: nn.Module) -> int:
    """Zeros of the distinct Conv/Linear weights, each tensor once (by identity)."""
    weights = {id(m.weight): m.weight for m in model.modules() if isinstance(m, nn.Linear)}
    return sum(int((w == 0).sum()) for w in weights.values())


@pytest.fixture(params=sorted(CASES))
def case(request):
    torch.manual_seed(0)
    cls, make_input, n_prunable, n_all, paths = CASES[request.param]
    return cls, cls(), make_input(), n_prunable, n_all, paths


def test_counts_take_the_shared_tensor_once(case):
    _, model, _, n_prunable, n_all, _ = case
    assert metrics.count_parameters(model, "prunable").dense == n_prunable
    assert metrics.count_parameters(model, "all").dense == n_all


@pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.9])
def test_global_magnitude_prune_removes_floor_s_n_once(case, sparsity):
    _, model, x, n_prunable, _, _ = case
    pruned = compress.global_magnitude_prune(model, sparsity)
    assert _zeros(pruned) == math.floor(sparsity * n_prunable)
    assert _zeros(model) == 0
    summary = metrics.summarize(pruned, x)
    assert summary["params_nonzero_all"] == metrics.count_parameters(model, "all").dense - _zeros(pruned)
    assert summary["sparsity_prunable"] == pytest.approx(math.floor(sparsity * n_prunable) / n_prunable)


def test_layerwise_prune_prunes_the_shared_tensor_once():
    pruned = compress.layerwise_magnitude_prune(TiedLM(), 0.5)
    assert pruned.head.weight is pruned.emb.weight
    assert int((pruned.emb.weight == 0).sum()) == 400  # ⌊0.5·800⌋ once, not twice
    assert int((pruned.mid.weight == 0).sum()) == 128


def test_export_save_load_keeps_the_tie_and_stores_it_once(case, tmp_path):
    cls, model, x, _, n_all, paths = case
    exported = compress.to_exported(compress.global_magnitude_prune(model, 0.5), "unstructured", x)
    compress.save_exported(exported, tmp_path / "m", base=cls)
    stored = safetensors.torch.load_file(str(tmp_path / "m" / "model.safetensors"))
    assert sum(t.numel() for t in stored.values()) == n_all
    loaded = slimtrain.load(tmp_path / "m", factory=cls)
    first, second = (loaded.get_submodule(p).weight for p in paths)
    assert first is second
    assert sum(p.numel() for p in loaded.parameters()) == n_all
    torch.testing.assert_close(loaded(x), exported(x), rtol=0, atol=0)


@pytest.mark.parametrize("target", [500.0, 900.0])
def test_swd_selects_floor_target_n_once(case, target):
    _, model, _, n_prunable, _, _ = case
    prune_to_target(model, MagnitudeSelection(target))
    assert _zeros(model) == math.floor(target / 1000 * n_prunable)


def test_factorizations_refuse_naming_both_paths(case):
    _, model, _, _, _, paths = case
    both = rf"'{paths[0]}'.*'{paths[1]}'|'{paths[1]}'.*'{paths[0]}'"
    with pytest.raises(UnsupportedModelError, match=both):
        compress.svd_decompose(model, 0.5, include_linear=True)
    with pytest.raises(UnsupportedModelError, match=both):
        convert_to_lowrank(model, keep_last_linear_dense=False)
    # Refused before anything was converted.
    assert all(type(m) in (nn.Linear, nn.Embedding, type(model)) for m in model.modules())


def test_filter_pruning_refuses_a_shared_linear(case):
    _, model, x, _, _, _ = case
    plan = compress.filter_pruning_plan(model, 0.5, x, include_linear=True)
    with pytest.raises(UnsupportedModelError, match="filter pruning"):
        compress.apply_channel_masks(model, plan)

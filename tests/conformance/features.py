"""The features of the conformance matrix: each applies one public slimtrain operation to a model and checks
that the result is exact, or lets the refusal (an ``UnsupportedModelError``) through.

Exact means: exported outputs equal the compressed model's, a reloaded model equals the exported one, tied
tensors stay one tensor, constraints hold, and counts equal the model's literal hand counts. The checks use
torch only (never slimtrain's counting functions).
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

import slimtrain
from slimtrain import compress, metrics
from slimtrain.errors import UnsupportedModelError
from slimtrain.fw import SFW, build_constraints
from slimtrain.lowrank import TDLRT, convert_to_lowrank, to_dense_model
from slimtrain.swd import ChannelSelection, MagnitudeSelection, SelectiveWeightDecay

from .zoo import Case

# -- independent helpers ----------------------------------------------------------------------------------


def leaves(output: Any) -> list[torch.Tensor]:
    """The tensors of a model output (a tensor, tuple, list, dict or ModelOutput), in order."""
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, Mapping):
        return [t for v in output.values() for t in leaves(v)]
    if isinstance(output, (tuple, list)):
        return [t for v in output for t in leaves(v)]
    return []


def run(model: nn.Module, inputs: Any) -> Any:
    model.eval()
    with torch.no_grad():
        return model(**inputs) if isinstance(inputs, Mapping) else model(inputs)


def assert_same(expected: Any, actual: Any, atol: float = 1e-4) -> None:
    a, b = leaves(expected), leaves(actual)
    assert a and len(a) == len(b), f"{len(a)} output tensors expected, {len(b)} got"
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(y, x, rtol=1e-4, atol=atol)


def _wide(inputs: Any) -> Any:
    """Inputs with floating tensors in float64 (token ids stay integers)."""
    if isinstance(inputs, Mapping):
        return {k: _wide(v) for k, v in inputs.items()}
    return inputs.double() if inputs.is_floating_point() else inputs


def loss_of(output: Any) -> torch.Tensor:
    return sum(t.float().pow(2).mean() for t in leaves(output) if t.is_floating_point())


def train_steps(model: nn.Module, inputs: Any, step: Callable[[Callable[[], torch.Tensor]], Any], n: int = 2):
    model.train()
    for _ in range(n):

        def closure() -> torch.Tensor:
            output = model(**inputs) if isinstance(inputs, Mapping) else model(inputs)
            loss = loss_of(output)
            loss.backward()
            return loss

        step(closure)


def distinct_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # parameters() yields a shared tensor once


def prunable_tensors(model: nn.Module) -> dict[int, torch.Tensor]:
    """The prunable weights by hand: conv, transposed conv, linear, HF Conv1D, RNN and attention input
    weights (a parametrized layer's computed weight included), each tensor once.
    """
    found: dict[int, torch.Tensor] = {}
    for m in model.modules():
        if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)) or type(m).__name__ == "Conv1D":
            w = m.weight
        elif isinstance(m, nn.RNNBase):
            for name in m._flat_weights_names:
                if name.startswith("weight"):
                    found[id(getattr(m, name))] = getattr(m, name)
            continue
        elif isinstance(m, nn.MultiheadAttention) and m.in_proj_weight is not None:
            w = m.in_proj_weight
        else:
            continue
        found[id(w)] = w
    return found


def zeros(tensors: dict[int, torch.Tensor]) -> int:
    return sum(int((t == 0).sum()) for t in tensors.values())


def layers_left_dense(model: nn.Module, kinds: tuple[type, ...]) -> list[str]:
    """Paths of conv/linear-like layers of ``kinds`` (HF Conv1D with Linear) not inside a slimtrain layer."""
    inside = {
        f"{name}.{sub}" if name else sub
        for name, m in model.named_modules()
        if type(m).__module__.startswith("slimtrain.")
        for sub, _ in m.named_modules()
        if sub
    }
    return [
        name
        for name, m in model.named_modules()
        if name not in inside
        and not type(m).__module__.startswith("slimtrain.")
        and (isinstance(m, kinds) or (nn.Linear in kinds and type(m).__name__ == "Conv1D"))
    ]


def assert_named_in_warnings(left: list[str], caught: list[warnings.WarningMessage]) -> None:
    """Every layer an operator left as it was is named (quoted) in one of its warnings."""
    text = " ".join(str(w.message) for w in caught)
    silent = [name for name in left if f"'{name}'" not in text]
    assert not silent, f"layers left dense without a warning naming them: {silent}"


def tie_kept(case: Case, model: nn.Module) -> None:
    if case.tied is not None:
        a, b = (model.get_submodule(p).weight for p in case.tied)
        assert a is b, f"{case.tied} no longer share their weight"


# -- the features ------------------------------------------------------------------------------------------


def _sfw(mode: str):
    def feature(case: Case, model: nn.Module, inputs: Any, tmp: Path) -> None:
        groups = build_constraints(model, mode, k=0.3, tau=10.0, n_draws=2)
        optimizer = SFW(groups, lr=0.1, momentum=0.9)

        def step(closure):
            optimizer.zero_grad()
            optimizer.step(closure)

        train_steps(model, inputs, step)
        covered = [id(p) for g in optimizer.param_groups for p in g["params"]]
        trainable = [id(p) for p in model.parameters() if p.requires_grad]
        assert sorted(covered) == sorted(trainable), "every trainable tensor gets exactly one set"
        for g in optimizer.param_groups:
            for p, c in zip(g["params"], g["constraint"], strict=True):
                assert c.is_feasible(p), f"infeasible iterate for a tensor of shape {tuple(p.shape)}"
        tie_kept(case, model)

    return feature


def swd_unstructured(case: Case, model: nn.Module, inputs: Any, tmp: Path) -> None:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    swd = SelectiveWeightDecay(MagnitudeSelection(900), weight_decay=5e-4, total_steps=2)

    def step(closure):
        optimizer.zero_grad()
        closure()
        swd.apply_(model)
        optimizer.step()
        swd.step()

    train_steps(model, inputs, step)
    swd.prune(model)
    prunable = prunable_tensors(model)
    assert sum(t.numel() for t in prunable.values()) == case.params_prunable
    assert zeros(prunable) == math.floor(0.9 * case.params_prunable)
    tie_kept(case, model)


def swd_structured(case: Case, model: nn.Module, inputs: Any, tmp: Path) -> None:
    for m in model.modules():  # fresh BatchNorms tie at γ = 1; training separates them
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
            nn.init.uniform_(m.weight, 0.1, 1.0)
    selection = ChannelSelection(model, target=500, penalize_filters=True, example_inputs=inputs)
    swd = SelectiveWeightDecay(selection, weight_decay=5e-4, total_steps=2)
    swd.prune(model)
    exported = compress.to_exported(model, "filter", inputs)
    assert_same(run(model, inputs), run(exported, inputs))
    assert distinct_parameters(exported) <= case.params_all // 2


def _lowrank(conv: str | None, adaptive: bool):
    def feature(case: Case, model: nn.Module, inputs: Any, tmp: Path) -> None:
        before = run(model, inputs)
        options = dict(keep_first_conv_dense=False, keep_last_linear_dense=False, init="from_weights")
        options.update(rank_fraction=1.0, max_rank_fraction=1.0, free_factors=not adaptive)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            layers = convert_to_lowrank(model, conv=conv, linear="matrix", **options)
        assert layers, "no layer converted"
        assert_named_in_warnings(layers_left_dense(model, (nn.modules.conv._ConvNd, nn.Linear)), caught)
        assert_same(before, run(model, inputs))  # full rank from the weights: the same function
        if adaptive:
            integrator = TDLRT(model, lambda params: torch.optim.SGD(params, lr=0.01), tau=0.1)
            train_steps(model, inputs, integrator.step)
        else:
            optimizer = torch.optim.SGD(model.parameters(), lr=0.01)

            def step(closure):
                optimizer.zero_grad()
                closure()
                optimizer.step()

            train_steps(model, inputs, step)
        # The trained model exports (deployment factorized layers), saves and loads back exactly.
        exported = compress.to_exported(model, "native", inputs)
        assert_same(run(model, inputs), run(exported, inputs))
        compress.save_exported(exported, tmp / "lowrank", base=case.build)
        assert_same(
            run(exported, inputs), run(slimtrain.load(tmp / "lowrank", factory=case.build), inputs), atol=0
        )
        # In float64: after training steps, BatchNorms with tiny running variances amplify float32 rounding.
        model.double()
        dense = to_dense_model(model, inplace=False)
        assert_same(run(model, _wide(inputs)), run(dense, _wide(inputs)))

    return feature


def magnitude_export(case: Case, model: nn.Module, inputs: Any, tmp: Path) -> nn.Module:
    pruned = compress.global_magnitude_prune(model, 0.5)
    prunable = prunable_tensors(pruned)
    assert sum(t.numel() for t in prunable.values()) == case.params_prunable
    assert zeros(prunable) >= math.floor(0.5 * case.params_prunable)
    assert zeros(prunable_tensors(model)) < zeros(prunable), "the input model was modified"
    exported = compress.to_exported(pruned, "unstructured", inputs)
    assert_same(run(pruned, inputs), run(exported, inputs))
    tie_kept(case, exported)
    return exported


def filter_export(case: Case, model: nn.Module, inputs: Any, tmp: Path) -> nn.Module:
    plan = compress.filter_pruning_plan(model, 0.5, inputs)
    masked = compress.apply_channel_masks(model, plan)
    thinned = compress.remove_channels(model, plan, inputs)
    assert_same(run(masked, inputs), run(thinned, inputs))
    assert distinct_parameters(thinned) < case.params_all
    tie_kept(case, thinned)
    return thinned


def _factorized_export(decompose: Callable[[nn.Module, float], nn.Module], kinds: tuple[type, ...]):
    def feature(case: Case, model: nn.Module, inputs: Any, tmp: Path) -> nn.Module:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            full_rank = decompose(model, 0.0)
            assert_same(run(model, inputs), run(full_rank, inputs))  # full rank: the same function
            factorized = decompose(model, 0.5)
        assert_named_in_warnings(layers_left_dense(factorized, kinds), caught)
        exported = compress.to_exported(factorized, "lowrank", inputs)
        assert_same(run(factorized, inputs), run(exported, inputs))
        tie_kept(case, exported)
        return exported

    return feature


def csr(case: Case, model: nn.Module, inputs: Any, tmp: Path) -> nn.Module:
    pruned = compress.global_magnitude_prune(model, 0.5)
    sparse = compress.to_sparse_linear(pruned)
    assert_same(run(pruned, inputs), run(sparse, inputs))
    return sparse


def save_load(case: Case, model: nn.Module, inputs: Any, tmp: Path) -> nn.Module:
    """The thinned model where channels can be removed (re-shaped layers to rebuild), else the pruned one."""
    try:
        exported = filter_export(case, copy.deepcopy(model), inputs, tmp)
    except UnsupportedModelError:
        exported = magnitude_export(case, model, inputs, tmp)
    compress.save_exported(exported, tmp / "exported", base=case.build)
    loaded = slimtrain.load(tmp / "exported", factory=case.build)
    assert distinct_parameters(loaded) == distinct_parameters(exported)
    assert_same(run(exported, inputs), run(loaded, inputs), atol=0)
    tie_kept(case, loaded)
    return loaded


def metric_counts(case: Case, model: nn.Module, inputs: Any, tmp: Path) -> None:
    assert metrics.count_parameters(model, "all").dense == case.params_all
    assert metrics.count_parameters(model, "prunable").dense == case.params_prunable
    pruned = compress.global_magnitude_prune(model, 0.5)
    summary = metrics.summarize(pruned, inputs, reference=model)
    assert summary["params_nonzero_all"] == sum(int((p != 0).sum()) for p in pruned.parameters())
    assert summary["params_nonzero_all"] <= distinct_parameters(pruned) - math.floor(
        0.5 * case.params_prunable
    )
    assert summary["macs_dense"] > 0


FEATURES: dict[str, Callable[[Case, nn.Module, Any, Path], Any]] = {
    "sfw_unstructured": _sfw("unstructured"),
    "sfw_filter": _sfw("filter"),
    "sfw_lowrank": _sfw("lowrank"),
    "swd_unstructured": swd_unstructured,
    "swd_structured": swd_structured,
    "tdlrt": _lowrank("tucker", adaptive=True),
    "dlrt": _lowrank("matrix", adaptive=True),
    "fixed_rank": _lowrank("tucker", adaptive=False),
    "magnitude_export": magnitude_export,
    "filter_export": filter_export,
    "svd_export": _factorized_export(
        lambda m, s: compress.svd_decompose(m, s, include_linear=True), (nn.modules.conv._ConvNd, nn.Linear)
    ),
    "tucker_export": _factorized_export(compress.tucker_decompose, (nn.modules.conv._ConvNd,)),
    "csr": csr,
    "save_load": save_load,
    "metrics": metric_counts,
}
"""Feature name → the check; every feature works on a deep copy of the model."""


def onnx_roundtrip(model: nn.Module, inputs: Any, tmp: Path) -> None:
    """Export to ONNX and compare onnxruntime's outputs (``export_onnx`` verifies them)."""
    compress.export_onnx(model, inputs, tmp / "model.onnx")


def fresh(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model)

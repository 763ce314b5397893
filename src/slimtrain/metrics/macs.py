"""Measured MAC counts of a model on a real input (docs/metrics.md#macs).

Two sources are combined:

- ``torch.utils.flop_counter.FlopCounterMode`` counts everything the forward pass executes (MACs =
  FLOPs/2), including factorized layers built from any ops; this is the dense count of a model as it is.
  :data:`~slimtrain.metrics.mac_formulas.FLOP_FORMULAS` adds the fused ops it counts as zero (RNN kernels,
  attention on CPU, the attention fast paths), so the count does not depend on the device; the fast paths
  of ``nn.MultiheadAttention`` and ``nn.TransformerEncoderLayer`` are switched off while counting so that
  the hooks below see their Linear layers, as in training.
- forward hooks on every Conv/Linear layer outside factorized layers give per-layer dense MACs from the real
  output shapes (Conv: C_out·H_out·W_out·(C_in/groups)·k_h·k_w; Linear: in·out·tokens).

Effective MACs follow the unstructured rule of ShrinkBench/SFW (per-layer dense MACs × weight density,
masks honoured) for plain Conv/Linear layers and sparse-storage layers (whose CSR product FlopCounterMode
counts at dense size), and count factorized layers and every other op as executed —
except factorized linear layers with ``macs_as_dense = True`` (NN-BCD's TT layers, which rebuild the dense
weight every forward pass): they count as the dense product they run, as docs/metrics.md#macs prescribes, so
the count does not depend on the batch size the reconstruction is spread over.
All counts are per sample: totals over the example batch divided by its first dimension.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from slimtrain._materialized import refuse_unmaterialized
from slimtrain._model_io import ModelInputs, batch_size, call_model, eval_mode
from slimtrain.metrics.counting import DENSE_LAYER_TYPES, effective_weight, factorized_modules
from slimtrain.metrics.mac_formulas import FLOP_FORMULAS
from slimtrain.metrics.sparse_weight import SparseWeightLayer

ExampleInput = ModelInputs
"""One input tensor, the positional inputs of ``model(*inputs)`` (a tuple or list) or the keyword inputs of
``model(**inputs)`` (a dict); the first dimension of the first tensor is the batch."""


@dataclass(frozen=True)
class LayerMacs:
    """Per-sample MACs of one Conv/Linear layer, from a forward hook.

    Attributes:
        name: Qualified module name.
        type: Module class name.
        dense: Dense MACs per sample (summed over calls if the layer runs several times).
        density: Weight density NNZ(W)/numel(W), masks applied.
    """

    name: str
    type: str
    dense: float
    density: float

    @property
    def effective(self) -> float:
        """Unstructured effective MACs: dense MACs × weight density (ShrinkBench/SFW rule)."""
        return self.dense * self.density


@dataclass(frozen=True)
class MacsCount:
    """MAC counts of one forward pass, per sample.

    Attributes:
        executed: Everything the forward pass runs (FlopCounterMode FLOPs/2), zeros counted as work. This
            is ``macs_dense`` of a model without factorized layers.
        effective: ``executed`` minus the MACs that zero weights of plain Conv/Linear layers save
            (``macs_effective``; factorized layers and other ops counted as executed).
        layers: Hook counts of the plain Conv/Linear layers, in call order.
        factorized: Executed MACs of each factorized layer, by name.
    """

    executed: float
    effective: float
    layers: tuple[LayerMacs, ...]
    factorized: dict[str, float]


def count_macs(model: nn.Module, example_input: ExampleInput) -> MacsCount:
    """Count dense, per-layer and effective MACs of ``model`` on ``example_input`` (docs/metrics.md#macs).

    The model runs once in eval mode without gradients (its training flag is restored afterwards), so
    BatchNorm statistics are left untouched.

    Args:
        model: Masked or exported model; may contain :class:`~slimtrain.metrics.FactorizedLayer` modules.
        example_input: A real input at the evaluation resolution (first dimension = batch): a tensor, a
            tuple of positional inputs or a dict of keyword inputs.

    Returns:
        The :class:`MacsCount`, per sample.

    Raises:
        UnsupportedModelError: A parameter or buffer without values (``meta`` device, lazy module).
    """
    refuse_unmaterialized(model, "count_macs")
    batch = batch_size(example_input)
    factorized = factorized_modules(model)
    per_layer: dict[str, int] = {}
    # Layers that rebuild their dense weight every forward count as the dense product they run
    # (docs/metrics.md#macs).
    as_dense = {name: 0 for name, m in factorized.items() if getattr(m, "macs_as_dense", False)}
    handles = [factorized[name].register_forward_hook(_make_hook(name, as_dense)) for name in as_dense]
    for name, m in model.named_modules():
        inside = any(name == f or name.startswith(f + ".") for f in factorized)
        if isinstance(m, (*DENSE_LAYER_TYPES, SparseWeightLayer)) and not inside:
            handles.append(m.register_forward_hook(_make_hook(name, per_layer)))
    fastpath = torch.backends.mha.get_fastpath_enabled()
    # The fused inference kernels would hide the feed-forward Linears from the hooks (and their masks).
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with eval_mode(model), torch.no_grad():
            with FlopCounterMode(display=False, custom_mapping=FLOP_FORMULAS) as counter:
                call_model(model, example_input)
    finally:
        for h in handles:
            h.remove()
        torch.backends.mha.set_fastpath_enabled(fastpath)
    modules = dict(model.named_modules())
    layers = tuple(
        LayerMacs(
            name, type(modules[name]).__name__, _per_sample(total, batch), _weight_density(modules[name])
        )
        for name, total in per_layer.items()
    )
    flops = counter.get_flop_counts()
    root = type(model).__name__  # FlopCounterMode names modules "<root class>.<qualified name>"
    fact_macs = {
        name: _per_sample(sum(flops.get(f"{root}.{name}" if name else root, {}).values()) // 2, batch)
        for name in factorized
    }
    executed = _per_sample(counter.get_total_flops() // 2, batch)
    for name, dense in as_dense.items():
        executed += _per_sample(dense, batch) - fact_macs[name]
        fact_macs[name] = _per_sample(dense, batch)
    saved = sum(layer.dense - layer.effective for layer in layers)
    return MacsCount(executed=executed, effective=executed - saved, layers=layers, factorized=fact_macs)


def _make_hook(name: str, store: dict[str, int]):
    """Forward hook adding the dense MACs of one call of a Conv/Linear layer to ``store[name]``."""

    def hook(module: nn.Module, args: tuple, output: Tensor) -> None:
        if not isinstance(module, nn.modules.conv._ConvNd):
            macs = output.numel() * module.in_features  # Linear, or a factorized layer standing for one
        elif module.transposed:
            # Each input position is scattered through C_out/groups·k outputs.
            macs = args[0].numel() * (module.out_channels // module.groups) * math.prod(module.kernel_size)
        else:
            macs = output.numel() * (module.in_channels // module.groups) * math.prod(module.kernel_size)
        store[name] = store.get(name, 0) + macs

    return hook


def _weight_density(module: nn.Module) -> float:
    """NNZ/numel of the effective (masked) weight of a Conv/Linear or sparse-storage layer."""
    weight = effective_weight(module)
    return int(torch.count_nonzero(weight)) / weight.numel() if weight.numel() else 1.0


def _per_sample(total: int, batch: int) -> float:
    """``total / batch``, kept an ``int`` when exact."""
    return total // batch if total % batch == 0 else total / batch

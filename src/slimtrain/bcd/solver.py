"""The NN-BCD solver: full-batch backward block sweeps for compressed ReLU networks.

Li, Chung, Du, Wang, Zhou, Shen, "On Model Compression for Neural Networks: Framework, Algorithm, and
Convergence Guarantee", arXiv:2303.06815, built on Zeng et al., ICML 2019. One call of :meth:`NNBCD.sweep`
is one iteration of the paper's algorithm: output block, then for each hidden layer from the top V_i, U_i,
W_i and the compressed copy, each by its closed-form minimiser (:mod:`slimtrain.bcd.blocks`). The solver's
options live in one frozen :class:`NNBCDConfig`; see ``docs/nnbcd.md``.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

import torch
from torch import nn

from slimtrain._config import is_int, is_real, with_options
from slimtrain.bcd.blocks import (
    update_activation,
    update_conv_weight,
    update_output_activation,
    update_output_preactivation,
    update_preactivation,
    update_weight,
)
from slimtrain.bcd.conv_im2col import Im2colConv
from slimtrain.bcd.copies import CompressedCopy
from slimtrain.bcd.export import compressed_network
from slimtrain.bcd.memory import (
    available_memory_bytes,
    estimate_full_batch_bytes,
    max_full_batch_samples,
)
from slimtrain.bcd.objective import ObjectiveTerms, penalized_objective
from slimtrain.errors import FullBatchMemoryError

_EVAL_CHUNK = 4096


class ObjectiveIncreaseWarning(RuntimeWarning):
    """Φ rose over a sweep (expected only with ``PrunedCopy(in_place=True)`` or unguarded TT copies)."""


@dataclass(frozen=True)
class SweepRecord:
    """Monitoring record of one sweep.

    Attributes:
        iteration: Sweep number, starting at 1.
        objective: Φ and its terms after the sweep.
        seconds: Wall time of the sweep (without evaluation).
        train_accuracy: Accuracy of the compressed network on the training set, if evaluated.
        test_accuracy: Accuracy of the compressed network on the test set, if evaluated and given.
        increased_terms: Terms that rose, largest rise first, when Φ rose over the sweep; else empty.
        blocks: ``(block name, Φ after it)`` for every block update, when block tracing is on.
    """

    iteration: int
    objective: ObjectiveTerms
    seconds: float
    train_accuracy: float | None = None
    test_accuracy: float | None = None
    increased_terms: tuple[str, ...] = ()
    blocks: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class NNBCDConfig:
    """The options of :class:`NNBCD` (everything but the network: widths, conv layer and copies).

    Defaults are the reference MLP settings of Li et al. (arXiv:2303.06815), except ``tau`` = 0 (no coupling
    to the copies unless asked for).

    Attributes:
        gamma: Activation and output coupling γ > 0.
        rho: Linear coupling ρ > 0.
        alpha: Proximal weight α > 0.
        tau: Compressed-copy coupling τ ≥ 0.
        init: Initial weight distribution, ``"xavier_normal"`` or ``"normal"`` (N(0, 1)), multiplied by
            ``init_scale``.
        init_scale: Scale > 0 of the initial weights (reference: 0.2·Xavier for MLPs, 0.01·N(0,1) for the
            CNN).
        dtype: Floating dtype of all blocks (float64 recommended for small γ or ρ).
        device: Device of all blocks (CPU or CUDA); a string is stored as the :class:`torch.device` it names.
        seed: Seed of the weight initialisation.
        memory_budget_bytes: Budget (≥ 1) for the full-batch memory estimate; ``None``: what the device has
            available.
        trace_blocks: Evaluate Φ after every block update (slow; for checking monotonicity).

    Raises:
        ValueError: A field has a wrong value; the message names the field.
    """

    gamma: float = 0.5
    rho: float = 0.5
    alpha: float = 1.0
    tau: float = 0.0
    init: Literal["xavier_normal", "normal"] = "xavier_normal"
    init_scale: float = 0.2
    dtype: torch.dtype = torch.float64
    device: torch.device | str = "cpu"
    seed: int = 0
    memory_budget_bytes: int | None = None
    trace_blocks: bool = False

    def __post_init__(self) -> None:
        def bad(field: str, why: str) -> ValueError:
            return ValueError(f"NNBCDConfig.{field}={getattr(self, field)!r}: {why}")

        for field in ("gamma", "rho", "alpha", "init_scale"):
            value = getattr(self, field)
            if not (is_real(value) and 0 < value < math.inf):
                raise bad(field, "must be positive and finite")
        if not (is_real(self.tau) and 0 <= self.tau < math.inf):
            raise bad("tau", "must be non-negative and finite")
        if self.init not in ("xavier_normal", "normal"):
            raise bad("init", "unknown init; use 'xavier_normal' or 'normal'")
        if not (isinstance(self.dtype, torch.dtype) and self.dtype.is_floating_point):
            raise bad("dtype", "must be a floating torch.dtype such as torch.float64")
        try:
            device = torch.device(self.device)
        except (RuntimeError, TypeError):
            raise bad("device", "not a torch.device or a device string such as 'cpu' or 'cuda:0'") from None
        object.__setattr__(self, "device", device)
        if not is_int(self.seed):
            raise bad("seed", "must be an integer")
        if self.memory_budget_bytes is not None and not (
            is_int(self.memory_budget_bytes) and self.memory_budget_bytes >= 1
        ):
            raise bad("memory_budget_bytes", "must be None or an integer ≥ 1")
        if not isinstance(self.trace_blocks, bool):
            raise bad("trace_blocks", "must be a bool")


class NNBCD:
    """Full-batch NN-BCD for a bias-free ReLU MLP, optionally with a first im2col convolution.

    Layers are indexed from 0 (``weights[0]`` is the first layer, the conv when ``conv`` is given). The
    output layer is never compressed; the conv layer is not compressed either.
    ``NNBCD(widths, NNBCDConfig(tau=1.0))`` and ``NNBCD(widths, tau=1.0)`` are the same solver.

    Args:
        widths: Linear widths ``[d_0, …, d_L]``; with ``conv``, d_0 must equal ``conv.out_features``.
        config: The solver's options (:class:`NNBCDConfig`); ``None`` for the defaults.
        compression: Layer index → :class:`~slimtrain.bcd.copies.TensorTrainCopy` or
            :class:`~slimtrain.bcd.copies.PrunedCopy` (the solver takes ownership of the objects).
        conv: Optional first convolution, solved in im2col form (docs/nnbcd.md, "The paper's CNN").
        **options: Fields of :class:`NNBCDConfig` (``gamma``, ``rho``, ``alpha``, ``tau``, ``init``,
            ``init_scale``, ``dtype``, ``device``, ``seed``, ``memory_budget_bytes``, ``trace_blocks``) that
            replace those of ``config``.

    Attributes:
        config: The options in effect.

    Raises:
        TypeError: On an option that is not a field of :class:`NNBCDConfig` (named, with the valid ones).
        ValueError: On an invalid option (naming the field), or inconsistent widths or compression keys
            (naming the culprit).
    """

    def __init__(
        self,
        widths: Sequence[int],
        config: NNBCDConfig | None = None,
        *,
        compression: Mapping[int, CompressedCopy] | None = None,
        conv: Im2colConv | None = None,
        **options: Any,
    ) -> None:
        self.config = cfg = with_options(NNBCDConfig, config, options, "NNBCD")
        self.widths = [int(w) for w in widths]
        if len(self.widths) < 2 or min(self.widths) < 1:
            raise ValueError(f"widths must list at least an input and an output size ≥ 1, got {list(widths)}")
        if conv is not None and conv.out_features != self.widths[0]:
            raise ValueError(
                f"widths[0]={self.widths[0]} must equal the conv output width {conv.out_features}"
            )
        self.conv = conv
        self.num_layers = len(self.widths) - 1 + (conv is not None)
        self.copies: dict[int, CompressedCopy] = dict(compression or {})
        self._check_compression()
        self.gamma, self.rho = float(cfg.gamma), float(cfg.rho)
        self.alpha, self.tau = float(cfg.alpha), float(cfg.tau)
        self.dtype = cfg.dtype
        self.device = torch.device(cfg.device)
        self.memory_budget_bytes = cfg.memory_budget_bytes
        self.trace_blocks = cfg.trace_blocks
        self.weights = self._initial_weights(cfg.init, cfg.init_scale, cfg.seed)
        self.preactivations: list[torch.Tensor] = []
        self.activations: list[torch.Tensor] = []
        self.history: list[SweepRecord] = []
        # layer → (W, V_{i−1}, W V_{i−1}): see _linear_map.
        self._linear_maps: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self._input_gram: torch.Tensor | None = None

    # ----------------------------------------------------------------------------------------- set-up
    def _check_compression(self) -> None:
        if len({id(c) for c in self.copies.values()}) != len(self.copies):
            raise ValueError("each compressed layer needs its own copy object; one object was given twice")
        for index in self.copies:
            if not 0 <= index < self.num_layers - 1:
                raise ValueError(
                    f"compression given for layer {index}; compressible layers are 0..{self.num_layers - 2} "
                    "(the output layer is never compressed)"
                )
            if index == 0 and self.conv is not None:
                raise ValueError("compression given for layer 0, the conv layer, which is not compressed")
            self.copies[index].check_shape(self._layer_shape(index), f"layer {index}")

    def _layer_shape(self, index: int) -> tuple[int, int]:
        if self.conv is not None:
            if index == 0:
                return (self.conv.patch_size, self.conv.out_channels)
            index -= 1
        return (self.widths[index + 1], self.widths[index])

    def _initial_weights(self, init: str, scale: float, seed: int) -> list[torch.Tensor]:
        generator = torch.Generator().manual_seed(seed)
        weights = []
        for index in range(self.num_layers):
            rows, cols = self._layer_shape(index)
            std = math.sqrt(2.0 / (rows + cols)) if init == "xavier_normal" else 1.0
            w = torch.randn(rows, cols, generator=generator, dtype=torch.float64) * (std * scale)
            weights.append(w.to(self.dtype).to(self.device))
        return weights

    def setup(self, inputs: torch.Tensor, labels: torch.Tensor) -> None:
        """Load the full training set and initialise U, V by a forward pass and the copies from W.

        The weights are kept, so a second call (or a second :meth:`fit`) warm-starts from them.

        Args:
            inputs: (N, d_0) features (or anything flattening to it), or (N, C, H, W) images with ``conv``.
            labels: (N,) integer class labels in [0, d_L).

        Raises:
            ValueError: If shapes or labels do not match the network.
            FullBatchMemoryError: If the estimated memory exceeds the budget; the message gives the largest
                N that fits.
        """
        n = inputs.shape[0]
        self._check_data(inputs, labels, "training")
        budget = self.memory_budget_bytes or available_memory_bytes(self.device)
        needed = estimate_full_batch_bytes(self.widths, n, self.dtype, self.conv)
        if needed > budget:
            fits = max_full_batch_samples(self.widths, budget, self.dtype, self.conv)
            raise FullBatchMemoryError(
                f"full-batch NN-BCD with N={n} samples needs about {needed / 2**30:.2f} GiB, but the "
                f"budget is {budget / 2**30:.2f} GiB; the largest N that fits is {fits} (reduce N or the "
                "widths, or use float32)"
            )
        self._train_inputs = inputs.to(self.dtype).to(self.device)
        self._train_labels = labels.to(self.device)
        self.targets = nn.functional.one_hot(self._train_labels.long(), self.widths[-1]).T.to(self.dtype)
        if self.conv is not None:
            self._patches = self.conv.patches(self._train_inputs)
            self._patches_gram = self._patches.T @ self._patches
            self._inputs = None
        else:
            self._inputs = self._train_inputs.reshape(n, -1).T.contiguous()
            self._input_gram = self._inputs @ self._inputs.T  # V_0 = X never changes
        self._linear_maps = {}
        self.preactivations, self.activations = [], []
        for index in range(self.num_layers):
            u = self._linear_map(index, self.weights[index])
            self.preactivations.append(u)
            last = index == self.num_layers - 1
            self.activations.append(u.clone() if last else self._relu_features(index, u))
        for index, copy in self.copies.items():
            copy.reset(self.weights[index])
            self.weights[index] = self.weights[index] if not copy.in_place else copy.matrix
        self.history = []

    def _check_data(self, inputs: torch.Tensor, labels: torch.Tensor, what: str) -> None:
        if labels.dim() != 1 or labels.shape[0] != inputs.shape[0]:
            raise ValueError(
                f"{what} labels must have shape ({inputs.shape[0]},) to match the inputs, "
                f"got {tuple(labels.shape)}"
            )
        if labels.dtype.is_floating_point or labels.min() < 0 or labels.max() >= self.widths[-1]:
            raise ValueError(f"{what} labels must be integers in [0, {self.widths[-1]})")
        if self.conv is None and inputs[0].numel() != self.widths[0]:
            raise ValueError(
                f"{what} inputs have {inputs[0].numel()} features per sample, widths[0]={self.widths[0]}"
            )

    # ------------------------------------------------------------------------------- layer layouts
    def _layer_input(self, index: int) -> torch.Tensor:
        return self._inputs if index == 0 else self.activations[index - 1]

    def _linear_map(self, index: int, weight: torch.Tensor) -> torch.Tensor:
        """W_iV_{i−1} in the layout of U_i ((N·P) × S for the conv layer).

        Blocks are replaced, never modified in place, so a product is reused while its two factors are the
        same tensors: the objective at the end of a sweep computes exactly the W_i^old V_{i−1}^old that the
        next sweep's U_i updates need (about a sixth of a sweep's work).
        """
        conv_layer = index == 0 and self.conv is not None
        source = self._patches if conv_layer else self._layer_input(index)
        cached = self._linear_maps.get(index)
        if cached is not None and cached[0] is weight and cached[1] is source:
            return cached[2]
        product = source @ weight if conv_layer else weight @ source
        self._linear_maps[index] = (weight, source, product)
        return product

    def _relu_features(self, index: int, preactivation: torch.Tensor) -> torch.Tensor:
        """σ(U_i) in the layout of V_i."""
        relu = preactivation.clamp_min(0)
        return self.conv.to_features(relu) if index == 0 and self.conv is not None else relu

    # ---------------------------------------------------------------------------------- objective
    def objective(self) -> ObjectiveTerms:
        """Φ and its terms at the current blocks (the penalized objective of docs/nnbcd.md)."""
        last = self.num_layers - 1
        return penalized_objective(
            targets=self.targets,
            activations=self.activations,
            relu_preactivations=[self._relu_features(i, self.preactivations[i]) for i in range(last)],
            preactivations=self.preactivations,
            linear_maps=[self._linear_map(i, self.weights[i]) for i in range(self.num_layers)],
            weights=self.weights,
            copies={i: c.matrix for i, c in self.copies.items()},
            gamma=self.gamma,
            rho=self.rho,
            tau=self.tau,
        )

    # -------------------------------------------------------------------------------------- sweep
    def sweep(self) -> SweepRecord:
        """One backward Gauss–Seidel sweep over all blocks (one iteration) and its monitoring record.

        Warns with :class:`ObjectiveIncreaseWarning`, naming the terms that rose, if Φ increased.

        Returns:
            The record (without accuracies; :meth:`fit` adds them).

        Raises:
            RuntimeError: If :meth:`setup` has not been called.
        """
        if not self.activations:
            raise RuntimeError("NNBCD.sweep() called before setup()")
        before = self.history[-1].objective if self.history else self.objective()
        trace: list[tuple[str, float]] = []
        start = time.perf_counter()
        self._sweep(trace)
        seconds = time.perf_counter() - start
        after = self.objective()
        record = SweepRecord(
            iteration=len(self.history) + 1,
            objective=after,
            seconds=seconds,
            increased_terms=self._increased_terms(before, after),
            blocks=tuple(trace),
        )
        if record.increased_terms:
            warnings.warn(
                f"NN-BCD objective rose in sweep {record.iteration}: {before.total:.6g} -> "
                f"{after.total:.6g}; "
                f"terms that rose: {', '.join(record.increased_terms)}",
                ObjectiveIncreaseWarning,
                stacklevel=2,
            )
        self.history.append(record)
        return record

    def _increased_terms(self, before: ObjectiveTerms, after: ObjectiveTerms) -> tuple[str, ...]:
        tolerance = 100 * torch.finfo(self.dtype).eps * max(abs(before.total), 1.0)
        if after.total <= before.total + tolerance:
            return ()
        rises = {f.name: getattr(after, f.name) - getattr(before, f.name) for f in fields(ObjectiveTerms)}
        return tuple(name for name, rise in sorted(rises.items(), key=lambda kv: -kv[1]) if rise > 0)

    def _sweep(self, trace: list[tuple[str, float]]) -> None:
        g, r, a, t = self.gamma, self.rho, self.alpha, self.tau
        u, v, w = self.preactivations, self.activations, self.weights

        def mark(name: str) -> None:
            if self.trace_blocks:
                trace.append((name, self.objective().total))

        last = self.num_layers - 1
        v[last] = update_output_activation(self.targets, u[last], v[last], g, a)
        mark(f"V[{last}]")
        u[last] = update_output_preactivation(v[last], self._linear_map(last, w[last]), g, r)
        mark(f"U[{last}]")
        w[last] = update_weight(w[last], u[last], self._layer_input(last), r, a)
        mark(f"W[{last}]")
        for i in range(last - 1, -1, -1):
            v[i] = update_activation(w[i + 1], u[i + 1], self._relu_features(i, u[i]), r, g)
            mark(f"V[{i}]")
            conv_layer = i == 0 and self.conv is not None
            target = self.conv.to_rows(v[i]) if conv_layer else v[i]
            u[i] = update_preactivation(target, self._linear_map(i, w[i]), u[i], g, r, a)
            mark(f"U[{i}]")
            if conv_layer:
                w[i] = update_conv_weight(w[i], u[i], self._patches, self._patches_gram, r, a)
            else:
                copy = self.copies.get(i)
                w[i] = update_weight(
                    w[i],
                    u[i],
                    self._layer_input(i),
                    r,
                    a,
                    t,
                    None if copy is None else copy.matrix,
                    gram=self._input_gram if i == 0 else None,
                )
            mark(f"W[{i}]")
            if i in self.copies:
                w[i] = self.copies[i].update(w[i])
                mark(f"T[{i}]")

    # ------------------------------------------------------------------------------ run and evaluate
    def fit(
        self,
        inputs: torch.Tensor,
        labels: torch.Tensor,
        iterations: int,
        *,
        test: tuple[torch.Tensor, torch.Tensor] | None = None,
        eval_every: int = 1,
        callback: Callable[[SweepRecord], None] | None = None,
    ) -> list[SweepRecord]:
        """Set up on the full training set and run ``iterations`` sweeps with monitoring.

        Accuracies of the compressed network (the copies, not W) are evaluated every ``eval_every`` sweeps
        and after the last one.

        Args:
            inputs: Training inputs (see :meth:`setup`).
            labels: Training labels.
            iterations: Number of sweeps.
            test: Optional (inputs, labels) test set.
            eval_every: Evaluation period in sweeps.
            callback: Called with each record after evaluation.

        Returns:
            The history of sweep records.
        """
        if iterations < 0 or eval_every < 1:
            raise ValueError(f"need iterations ≥ 0 and eval_every ≥ 1, got {iterations}, {eval_every}")
        if test is not None:
            self._check_data(*test, "test")
        self.setup(inputs, labels)
        for step in range(1, iterations + 1):
            record = self.sweep()
            if step % eval_every == 0 or step == iterations:
                record = self._with_accuracies(record, test)
                self.history[-1] = record
            if callback is not None:
                callback(record)
        return self.history

    def _with_accuracies(
        self, record: SweepRecord, test: tuple[torch.Tensor, torch.Tensor] | None
    ) -> SweepRecord:
        network = self.to_module()
        train = self._accuracy(network, self._train_inputs, self._train_labels)
        test_acc = None if test is None else self._accuracy(network, *test)
        return replace(record, train_accuracy=train, test_accuracy=test_acc)

    @torch.no_grad()
    def _accuracy(self, network: nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> float:
        correct = 0
        for start in range(0, inputs.shape[0], _EVAL_CHUNK):
            batch = inputs[start : start + _EVAL_CHUNK].to(self.dtype).to(self.device)
            predicted = network(batch).argmax(dim=1)
            correct += int((predicted == labels[start : start + _EVAL_CHUNK].to(self.device)).sum())
        return correct / inputs.shape[0]

    def accuracy(self, inputs: torch.Tensor, labels: torch.Tensor) -> float:
        """Top-1 accuracy of the compressed network on a data set.

        Args:
            inputs: Inputs in the training layout.
            labels: Integer labels.

        Returns:
            The fraction classified correctly.
        """
        self._check_data(inputs, labels, "evaluation")
        return self._accuracy(self.to_module(), inputs, labels)

    # ------------------------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Every block (W, U, V, the copies) and the monitoring history, as tensors and plain values.

        With :meth:`load_state_dict` after :meth:`setup` on the same data, the next sweeps continue exactly
        as an uninterrupted run would. U and V are d_i × N per layer, so the state grows with N.
        """
        return {
            "weights": [w.clone() for w in self.weights],
            "preactivations": [u.clone() for u in self.preactivations],
            "activations": [v.clone() for v in self.activations],
            "copies": {str(i): copy.state_dict() for i, copy in self.copies.items()},
            "history": [_record_to_dict(record) for record in self.history],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output; :meth:`setup` must have loaded the same training set.

        Raises:
            RuntimeError: If :meth:`setup` has not been called.
            ValueError: If the state's layers, shapes or number of samples do not match (naming the block).
        """
        if not self.activations:
            raise RuntimeError("NNBCD.load_state_dict() needs setup() with the training data first")
        for key in ("weights", "preactivations", "activations"):
            current, saved = getattr(self, key), state[key]
            if len(saved) != len(current):
                raise ValueError(f"NN-BCD state has {len(saved)} {key}, the solver has {len(current)}")
            for index, (now, old) in enumerate(zip(current, saved, strict=True)):
                if now.shape != old.shape:
                    raise ValueError(
                        f"NN-BCD state {key}[{index}] has shape {tuple(old.shape)}, the solver "
                        f"{tuple(now.shape)} (different network or number of samples)"
                    )
        if set(state["copies"]) != {str(i) for i in self.copies}:
            raise ValueError(
                f"NN-BCD state compresses layers {sorted(state['copies'])}, the solver {sorted(self.copies)}"
            )
        place = {"dtype": self.dtype, "device": self.device}
        self.weights = [w.to(**place) for w in state["weights"]]
        self.preactivations = [u.to(**place) for u in state["preactivations"]]
        self.activations = [v.to(**place) for v in state["activations"]]
        for index, copy in self.copies.items():
            copy.load_state_dict(_to_place(state["copies"][str(index)], place))
            if copy.in_place:
                self.weights[index] = copy.matrix
        self.history = [_record_from_dict(record) for record in state["history"]]

    def to_module(self) -> nn.Sequential:
        """The compressed network as an ordinary ``nn.Module`` (TT layers, pruned or dense linears)."""
        return compressed_network(self.weights, self.copies, self.conv)


def _record_to_dict(record: SweepRecord) -> dict[str, Any]:
    out = {f.name: getattr(record, f.name) for f in fields(SweepRecord)}
    out["objective"] = {f.name: getattr(record.objective, f.name) for f in fields(ObjectiveTerms)}
    out["increased_terms"] = list(record.increased_terms)
    out["blocks"] = [list(block) for block in record.blocks]
    return out


def _record_from_dict(data: dict[str, Any]) -> SweepRecord:
    return SweepRecord(
        **{
            **data,
            "objective": ObjectiveTerms(**data["objective"]),
            "increased_terms": tuple(data["increased_terms"]),
            "blocks": tuple((name, value) for name, value in data["blocks"]),
        }
    )


def _to_place(value: Any, place: dict[str, Any]) -> Any:
    """``value`` with every tensor moved to the solver's dtype and device (checkpoints load on the CPU)."""
    if isinstance(value, torch.Tensor):
        return value.to(**place)
    if isinstance(value, dict):
        return {key: _to_place(item, place) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_to_place(item, place) for item in value]
    return value

"""NN-BCD as engine methods: gradient-free, full-batch training of TT-compressed or pruned MLPs.

Li, Chung, Du, Wang, Zhou, Shen, "On Model Compression for Neural Networks: Framework, Algorithm, and
Convergence Guarantee", arXiv:2303.06815 (docs/nnbcd.md). The solver is :class:`slimtrain.bcd.NNBCD`; these
plugins connect it to recipes, ``train``/``sweep``/``compare``/``report``:

- The methods are **full-batch** (:attr:`Method.full_batch`): the trainer hands ``training_step`` the whole
  training split once per epoch, and one epoch runs ``sweeps_per_epoch`` backward sweeps
  (docs/nnbcd.md#one-sweep). No gradient is evaluated and no optimizer is built; the recipe's optimizer,
  schedule and batch size are unused.
- The model must be the registry's MLP (with ``model.init_from``, a bias-free one: the solver then starts
  from the loaded weights instead of its own initialization). Its biases are dropped (NN-BCD has none,
  docs/nnbcd.md#defaults-and-faithful-flags) and its layers are
  replaced by the compressed evaluation network of docs/nnbcd.md#evaluation-network-and-linear-algebra: hidden
  layers become ``TTLinear`` (``nnbcd``) or bias-free ``nn.Linear`` holding the pruned copy W̃
  (``nnbcd-prune``), the classifier a bias-free dense ``nn.Linear``. After every epoch the solver's current
  compressed weights are written into this ordinary ``nn.Module``, so validation, sweeps, metrics and export
  see exactly the network NN-BCD evaluates.
- The compression level is fixed during training: ``storage_reduction`` (TT: the largest uniform rank with
  CR₂ ≤ 1 − level, or an explicit ``rank``) or ``sparsity`` (per hidden layer; the output layer stays dense).
- The full-batch memory estimate runs on the first step, before any sweep, and raises
  :class:`~slimtrain.bcd.FullBatchMemoryError` with the largest N that fits.
- Checkpoints hold every block (W, U, V, the copies), so ``--resume`` continues exactly; they grow with N
  (U and V are d_i × N per layer).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from slimtrain._model_io import logits_of
from slimtrain.bcd import NNBCD, CompressedCopy, NNBCDConfig, PrunedCopy, TensorTrainCopy
from slimtrain.methods.tt_layout import TTLayoutOptions, check_mlp, resolve_tt_layout
from slimtrain.models.mlp import MLP
from slimtrain.train.method import Method, StepContext, StepOutput, register_method


class NNBCDSolverOptions(BaseModel):
    """Solver settings shared by both NN-BCD methods (defaults: the reference MLP notebooks, docs/nnbcd.md).

    Attributes:
        gamma: Activation and output coupling γ.
        rho: Linear coupling ρ.
        alpha: Proximal weight α.
        tau: Compressed-copy coupling τ.
        init: Initial weight distribution, scaled by ``init_scale``.
        init_scale: Scale of the initial weights.
        sweeps_per_epoch: Backward sweeps per epoch (so ``train.epochs × sweeps_per_epoch`` iterations).
        memory_budget_gib: Budget of the full-batch memory estimate; default: the available memory.
    """

    model_config = ConfigDict(extra="forbid")

    gamma: float = Field(0.5, gt=0.0)
    rho: float = Field(0.5, gt=0.0)
    alpha: float = Field(1.0, gt=0.0)
    tau: float = Field(5.0, ge=0.0)
    init: Literal["xavier_normal", "normal"] = "xavier_normal"
    init_scale: float = Field(0.2, gt=0.0)
    sweeps_per_epoch: int = Field(1, ge=1)
    memory_budget_gib: float | None = Field(None, gt=0.0)


class NNBCDTensorTrainOptions(TTLayoutOptions, NNBCDSolverOptions):
    """Options of ``nnbcd``: the solver settings, the TT layout and the TT-SVD safeguard (docs/nnbcd.md)."""

    safeguard: bool = True


class NNBCDPruningOptions(NNBCDSolverOptions):
    """Options of ``nnbcd-prune``: the solver settings and the hard-threshold copy (docs/nnbcd.md).

    Attributes:
        sparsity: Fraction s of each hidden layer's weights set to zero (the output layer stays dense).
        rule: ``topk`` (exact count, default) or ``quantile`` (reference).
        in_place: Threshold W itself, as the reference code does (not monotone in Φ).
    """

    sparsity: float = Field(0.9, ge=0.0, lt=1.0)
    rule: Literal["topk", "quantile"] = "topk"
    in_place: bool = False


class _NNBCDMethod(Method):
    """Common plugin logic; subclasses choose the compressed copy of each hidden layer."""

    levels_chosen = "during_training"
    full_batch = True
    precisions = ("fp32",)  # closed-form least-squares updates: no autocast forward to speed up

    def _copies(self, mlp: MLP) -> dict[int, CompressedCopy]:
        """Hidden-layer index → the compressed copy coupled to it (defined by each NN-BCD method)."""
        raise NotImplementedError

    def prepare(self, model: nn.Module) -> nn.Module:
        """Build the solver for the MLP's widths and turn the MLP into the compressed evaluation network."""
        mlp = check_mlp(model, self.name)
        reference = next(mlp.parameters())
        options = self.options
        budget = options.memory_budget_gib
        config = NNBCDConfig(
            **options.model_dump(include={"gamma", "rho", "alpha", "tau", "init", "init_scale"}),
            dtype=reference.dtype,
            device=reference.device,
            seed=self.recipe.seed,
            memory_budget_bytes=None if budget is None else int(budget * 2**30),
        )
        widths = [
            mlp.hidden[0].in_features,
            *(layer.out_features for layer in mlp.hidden),
            mlp.classifier.out_features,
        ]
        self.solver = NNBCD(widths, config, compression=self._copies(mlp))
        if self.recipe.model.init_from is not None:
            self._start_from(mlp)
        for index, copy in self.solver.copies.items():
            copy.reset(self.solver.weights[index])
        self._ready = False
        self._pending: dict[str, Any] | None = None
        for index in range(len(mlp.hidden)):
            mlp.hidden[index] = self._layer(index)
        mlp.classifier = self._layer(len(mlp.hidden))
        return mlp

    def _start_from(self, mlp: MLP) -> None:
        """Start the solver's weights W from the loaded ones (``model.init_from``) instead of its own init.

        Raises:
            ValueError: The MLP has biases, which NN-BCD would drop (changing the loaded network).
        """
        layers = [*mlp.hidden, mlp.classifier]
        if any(layer.bias is not None for layer in layers):
            raise ValueError(
                f"method '{self.name}' has no biases, so it starts from model.init_from only with a "
                "bias-free MLP: train the dense model with model.kwargs.bias: false"
            )
        for weight, layer in zip(self.solver.weights, layers, strict=True):
            weight.copy_(layer.weight.detach())

    def _layer(self, index: int) -> nn.Module:
        """Layer ``index`` of the compressed evaluation network (docs/nnbcd.md) at the current state."""
        if index in self.solver.copies:
            return self.solver.copies[index].to_module()
        weight = self.solver.weights[index]
        layer = nn.Linear(
            weight.shape[1], weight.shape[0], bias=False, dtype=weight.dtype, device=weight.device
        )
        layer.weight = nn.Parameter(weight.detach().clone())
        return layer

    def build_optimizer(self, model: nn.Module) -> None:
        """NN-BCD is gradient-free: no optimizer (and therefore no learning-rate schedule)."""
        self.optimizer = None

    def training_step(
        self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, ctx: StepContext
    ) -> StepOutput:
        """Run ``sweeps_per_epoch`` sweeps on the full training split and write the result into ``model``.

        The first call loads the split into the solver (memory check, U and V by a forward pass) and, after
        a resume, restores the checkpointed blocks. The returned loss is Φ after the last sweep (the quantity
        NN-BCD minimises, not a cross-entropy); the logits are the compressed network's on the split.

        Raises:
            FullBatchMemoryError: The full batch does not fit (raised before any sweep).
            ValueError: The inputs are not the split the solver was set up with.
        """
        if not self._ready:
            self.solver.setup(inputs, targets)
            if self._pending is not None:
                self.solver.load_state_dict(self._pending)
                self._pending = None
            self._ready = True
        elif inputs.shape[0] != self.solver.activations[0].shape[-1]:
            raise ValueError(
                f"method '{self.name}' is full-batch: set up on {self.solver.activations[0].shape[-1]} "
                f"samples, now given {inputs.shape[0]}"
            )
        for _ in range(self.options.sweeps_per_epoch):
            record = self.solver.sweep()
        mlp = check_mlp(model, self.name)
        for index, layer in enumerate([*mlp.hidden, mlp.classifier]):
            layer.load_state_dict(self._layer(index).state_dict())
        with torch.no_grad():
            logits = logits_of(model(inputs))
        objective = record.objective
        return StepOutput(
            loss=torch.tensor(objective.total, dtype=torch.float64), logits=logits, extras=objective.as_dict()
        )

    def describe(self, model: nn.Module) -> dict[str, Any]:
        """Φ and its terms after the last sweep, and the number of sweeps run."""
        history = self.solver.history
        out: dict[str, Any] = {"sweeps": len(history)}
        if history:
            out.update({f"objective_{k}": v for k, v in history[-1].objective.as_dict().items()})
            out["objective_rises"] = sum(bool(r.increased_terms) for r in history)
        return out

    def state_dict(self) -> dict[str, Any]:
        """Every solver block (W, U, V, copies) and the sweep history, once training has started."""
        if self._ready:
            return {"solver": self.solver.state_dict()}
        return {} if self._pending is None else {"solver": self._pending}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        """Keep the solver state until the first step brings the data back (the blocks need it)."""
        self._pending = state.get("solver")
        self._ready = False


@register_method
class NNBCDTensorTrain(_NNBCDMethod):
    """NN-BCD with every hidden layer coupled to a tensor-train copy of one uniform rank (docs/nnbcd.md).

    Options: :class:`NNBCDTensorTrainOptions`; the level is ``storage_reduction`` (1 − CR₂).
    """

    name = "nnbcd"
    Options = NNBCDTensorTrainOptions
    level_option = "storage_reduction"
    structures = ("lowrank",)  # tensor-train layers

    def _copies(self, mlp: MLP) -> dict[int, CompressedCopy]:
        self.layout = resolve_tt_layout(mlp, self.options)
        return {
            index: TensorTrainCopy(modes, self.layout.rank, safeguard=self.options.safeguard)
            for index, modes in self.layout.modes.items()
        }

    def describe(self, model: nn.Module) -> dict[str, Any]:
        """Φ, sweeps, the TT rank, CR₂ and how many TT-SVD updates the safeguard rejected."""
        rejected = sum(c.rejected_updates for c in self.solver.copies.values())
        return {
            **super().describe(model),
            "tt_rank": self.layout.rank,
            "storage_fraction_compressed": self.layout.storage_fraction_compressed,
            "rejected_tt_updates": rejected,
        }


@register_method
class NNBCDPruning(_NNBCDMethod):
    """NN-BCD with every hidden layer coupled to a hard-thresholded copy of sparsity s (docs/nnbcd.md).

    Options: :class:`NNBCDPruningOptions`; the level is ``sparsity`` (per hidden layer).
    """

    name = "nnbcd-prune"
    Options = NNBCDPruningOptions
    level_option = "sparsity"
    structures = ("unstructured",)

    def _copies(self, mlp: MLP) -> dict[int, CompressedCopy]:
        options = self.options
        return {
            index: PrunedCopy(options.sparsity, rule=options.rule, in_place=options.in_place)
            for index in range(len(mlp.hidden))
        }

"""Low-rank training methods: rank-adaptive TDLRT and matrix DLRT, and fixed-rank factor training.

Zangrando et al., *Geometry-aware training of factorized layers in tensor Tucker format*
(arXiv:2305.19059, TDLRT); Schotthöfer et al., *Low-rank lottery tickets* (arXiv:2205.13571, DLRT).
See ``docs/tdlrt.md`` (the integrator, its corrected defaults and the faithful flags that restore the
reference code's behaviour) and ``docs/reproducing.md`` (the reference presets).

All three fix their compression level during training: ``tdlrt`` and ``dlrt`` through the tolerance
``tau``, ``fixed-rank`` through the rank fraction. The trained model *is* the compressed model, so the
sweep evaluates it as it is (structure ``native``) and reports its per-layer ranks and both eval
compression-rate conventions.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from slimtrain._model_io import logits_of
from slimtrain.layers import RankConfig
from slimtrain.lowrank import (
    TDLRT,
    ConversionConfig,
    TDLRTConfig,
    convert_to_lowrank,
    factorized_layers,
    lowrank_report,
    to_dense_model,
)
from slimtrain.lowrank.integrator import ranks_as_lists, ranks_as_tuples
from slimtrain.train.method import (
    Method,
    StepContext,
    StepOutput,
    build_standard_optimizer,
    full_precision,
    register_method,
    trainable_parameters,
)


class _ConversionOptions(BaseModel):
    """Which layers are factorized and their rank bounds (shared by every low-rank method)."""

    model_config = ConfigDict(extra="forbid")

    factorize_convs: bool = Field(True, description="factorize Conv2d layers (else only Linear layers)")
    factorize_linears: bool = Field(True, description="factorize Linear layers as U S Vᵀ")
    skip: list[str] = Field(default_factory=list, description="module names kept dense")
    keep_first_conv_dense: bool = True
    keep_last_linear_dense: bool = True
    max_rank: int | None = Field(None, ge=1, description="user cap r_max_user on every mode's rank")
    matrix_min_rank: int = Field(2, ge=1, description="r_min of matrix layers (authors: 2)")


class _IntegratorOptions(_ConversionOptions):
    """Options of the rank-adaptive integrator (corrected defaults; faithful flags: docs/reproducing.md)."""

    tau: float = Field(0.1, ge=0.0, description="truncation tolerance, relative to ‖C̃‖_F unless absolute")
    absolute_tolerance: bool = False
    variant: Literal["two_pass", "parallel", "local"] = Field(
        "two_pass", description="'parallel': single-pass BUG; 'local': local S-iterations (RobustDLRT)"
    )
    local_steps: int = Field(10, ge=2, description="batches per augment-step-truncate cycle of 'local'")
    cycle_phase: Literal["global", "epoch", "epoch_offset"] = Field(
        "global",
        description="'local' cycles: 'global' count; 'epoch': restart each epoch (RobustDLRT script); "
        "'epoch_offset': augment at batch ≡ 1, truncate at ≡ 0 (RobustDLRT trainer class)",
    )
    rank_policy: Literal["adaptive", "fixed"] = "adaptive"
    initial_rank_fraction: float | None = Field(
        None, gt=0.0, le=1.0, description="initial ranks as a fraction of the mode sizes (default r_max)"
    )
    max_rank_fraction: float = Field(0.5, gt=0.0, le=1.0, description="r_max,i = ⌊fraction · n_i⌋")
    aug_cap: Literal["rmax", "n"] = "rmax"
    aug_select: Literal["svd", "qr_columns"] = Field("svd", description="'qr_columns': faithful RobustDLRT")
    truncation: Literal["hosvd", "dlrt_net"] = Field(
        "hosvd", description="'dlrt_net': faithful DLRT-Net tail"
    )
    state_transport: Literal["rotate", "reset", "none"] = Field("rotate", description="'none': DLRT-Net")
    max_grad_norm: float | None = Field(None, gt=0.0, description="clip over the stepped parameters only")
    update_bn_in_basis_pass: bool = Field(False, description="True: faithful DLRT-Net BatchNorm updates")
    parallel_pinv_rtol: float | None = Field(None, gt=0.0)


class TDLRTOptions(_IntegratorOptions):
    """Options of ``tdlrt``: Tucker convolutions, low-rank linears, rank-adaptive integrator."""

    tucker_min_rank: int = Field(3, ge=1, description="r_min of Tucker convolutions (authors: 3)")
    adaptive_modes: list[int] = Field(
        default_factory=lambda: [0, 1], description="adaptive Tucker modes: channel modes, or all four"
    )


class DLRTOptions(_IntegratorOptions):
    """Options of ``dlrt``: matrix DLRT on linears and on reshaped kernels ``mat(W) ∈ R^{C_out×C_in k k}``."""

    passes: Literal[2, 3] = Field(
        2, description="3: DLRT-Net's KLS step (K and L stepped by the optimizer, then S); 2: two-pass BUG"
    )


class FixedRankOptions(_ConversionOptions):
    """Options of ``fixed-rank``: vanilla factor training at a fixed rank fraction."""

    rank_fraction: float = Field(0.25, gt=0.0, le=1.0, description="ranks as a fraction of the mode sizes")
    conv_format: Literal["tucker", "matrix"] = Field("tucker", description="Tucker or UVᵀ convolutions")
    tucker_min_rank: int = Field(3, ge=1)
    adaptive_modes: list[int] = Field(
        default_factory=lambda: [0, 1], description="Tucker modes that are factorized (others full size)"
    )


# Options that carry the name of a ConversionConfig / RankConfig field they set (`tau` does not: it is the
# integrator's truncation tolerance, not the conversion's initial-rank tolerance; TDLRTConfig takes it).
_CONVERSION_OPTIONS = {
    "skip",
    "keep_first_conv_dense",
    "keep_last_linear_dense",
    "tucker_min_rank",
    "matrix_min_rank",
}
_RANK_OPTIONS = {"rank_fraction", "max_rank", "max_rank_fraction", "adaptive_modes"}


def _conversion_config(
    options: BaseModel, conv_format: str, recipe: Any, **rank_fields: Any
) -> ConversionConfig:
    """The :class:`ConversionConfig` of a low-rank method's options (``rank_fields`` on top).

    A run that starts from trained weights (``model.init_from``) factorizes them; otherwise the factors come
    from a fresh random initialization.
    """
    rank = RankConfig(**{**options.model_dump(include=_RANK_OPTIONS), **rank_fields})
    return ConversionConfig(
        conv=conv_format if options.factorize_convs else None,
        linear="matrix" if options.factorize_linears else None,
        init="random" if recipe.model.init_from is None else "from_weights",
        rank=rank,
        **options.model_dump(include=_CONVERSION_OPTIONS),
    )


def _report_fields(model: nn.Module, aug_cap: str = "rmax") -> dict[str, Any]:
    """Per-layer ranks and the model-level compression rates of :func:`lowrank_report` (docs/metrics.md)."""
    report = lowrank_report(model, aug_cap=aug_cap)
    fields: dict[str, Any] = {
        "ranks_per_layer": {name: list(ranks) for name, ranks in report["ranks_per_layer"].items()}
    }
    for key in (
        "cr_percent_eval_dlrt_convention",
        "cr_percent_eval_factorized_only",
        "cr_percent_train_tucker",
        "cr_percent_train_dlrt",
    ):
        if report[key] is not None:
            fields[key] = report[key]
    return fields


class _LowRankMethod(Method):
    """Shared base: the level is fixed during training and the trained model is evaluated as it is."""

    levels_chosen = "during_training"
    structures: ClassVar[tuple[str, ...]] = ()

    def describe(self, model: nn.Module) -> dict[str, Any]:
        """Per-layer ranks and the eval (both conventions) and training compression rates, in %."""
        return _report_fields(model)

    def dense_reference(self, model: nn.Module) -> nn.Module:
        """A copy of ``model`` with every factorized layer replaced by a dense layer of its weights."""
        return to_dense_model(model, inplace=False)


class _IntegratedLowRankMethod(_LowRankMethod):
    """A method whose factorized layers are trained by the :class:`~slimtrain.lowrank.TDLRT` integrator.

    :attr:`optimizer` is the integrator's inner optimizer (cores and every non-factorized parameter), so the
    engine's learning-rate schedule drives it; rank changes keep the parameter objects and thus the param
    groups with their ``initial_lr``. Gradients are averaged across processes by ``ctx.backward`` inside the
    closure, before the integrator uses them, so every process truncates to the same ranks.
    """

    level_option = "tau"
    conv_format: ClassVar[Literal["tucker", "matrix"]] = "tucker"
    # fp16 would need the integrator to skip a step whose second pass overflowed after its basis update.
    precisions = ("fp32", "bf16")

    def __init__(self, options: BaseModel, recipe: Any) -> None:
        super().__init__(options, recipe)
        self.integrator: TDLRT | None = None
        self._restored_step_count = 0
        self._restored_cycle_ranks: dict[str, tuple[int, ...]] | None = None

    def prepare(self, model: nn.Module) -> nn.Module:
        """Replace the convolutions and linears by factorized layers (of the loaded weights, if any)."""
        config = _conversion_config(
            self.options, self.conv_format, self.recipe, rank_fraction=self.options.initial_rank_fraction
        )
        layers = convert_to_lowrank(model, config)
        if not layers:
            raise ValueError(f"method '{self.name}': the model has no layer to factorize")
        return model

    def build_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        """Build the integrator; its inner optimizer follows the recipe's optimizer section."""
        # The integrator options carry TDLRTConfig's field names.
        config = TDLRTConfig(**self.options.model_dump(include={f.name for f in fields(TDLRTConfig)}))
        self.integrator = TDLRT(
            model, lambda params: build_standard_optimizer(params, self.recipe.optimizer), config
        )
        self.integrator.step_count = self._restored_step_count
        self.integrator.cycle_ranks = self._restored_cycle_ranks
        self.optimizer = self.integrator.optimizer
        return self.optimizer

    def training_step(
        self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, ctx: StepContext
    ) -> StepOutput:
        """One integrator step: two forward/backward passes (``passes=3``: three; one for the others)."""
        assert self.integrator is not None, "build_optimizer must run before training_step"
        first_logits: list[torch.Tensor] = []

        def closure() -> torch.Tensor:
            with ctx.autocast():  # the forward pass only: the integrator's algebra stays in float32
                logits = logits_of(model(inputs))
            loss = self.loss(model, full_precision(logits), targets)
            ctx.backward(loss, trainable_parameters(model))
            if not first_logits:
                first_logits.append(logits.detach())
            return loss

        batch_index = None
        if self.steps_per_epoch is not None:
            batch_index = ctx.step - ctx.epoch * self.steps_per_epoch
        loss = self.integrator.step(closure, batch_index=batch_index)
        return StepOutput(loss=loss, logits=first_logits[0])

    def on_epoch_end(self, model: nn.Module, epoch: int) -> None:
        """``cycle_phase="epoch"``: truncate a cycle still open at the epoch's end (RobustDLRT script)."""
        if self.integrator is not None and self.integrator.cycle_phase == "epoch":
            self.integrator.close_cycle()

    def describe(self, model: nn.Module) -> dict[str, Any]:
        """Per-layer ranks and compression rates (training counts at the cap the integrator augments with)."""
        cap = self.integrator.augmentation_cap if self.integrator is not None else self.options.aug_cap
        return _report_fields(model, aug_cap=cap)

    def state_dict(self) -> dict[str, Any]:
        """Ranks per layer, integrator step count and open cycle (the engine saves the inner optimizer)."""
        if self.integrator is None:
            return {"ranks": {}, "step_count": self._restored_step_count}
        return {
            "ranks": ranks_as_lists(self.integrator.ranks()),
            "step_count": self.integrator.step_count,
            "cycle_ranks": ranks_as_lists(self.integrator.cycle_ranks),
        }

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        """Reshape every factorized layer of ``model`` to the saved ranks (its weights are loaded next).

        Raises:
            ValueError: The saved layers differ from the model's.
        """
        layers = factorized_layers(model)
        saved = state.get("ranks", {})
        if saved.keys() != layers.keys():
            raise ValueError(
                f"method '{self.name}': checkpoint layers {sorted(saved)} differ from the model's "
                f"{sorted(layers)}"
            )
        for name, ranks in saved.items():
            layer = layers[name]
            core = layer.core.detach().new_zeros([int(r) for r in ranks])
            factors = [
                u.detach().new_zeros(n, int(r))
                for u, n, r in zip(layer.factors, layer.mode_sizes, ranks, strict=True)
            ]
            layer.set_factorization(core, factors)
        self._restored_step_count = int(state.get("step_count", 0))
        self._restored_cycle_ranks = ranks_as_tuples(state.get("cycle_ranks"))

    def finalize(self, model: nn.Module) -> None:
        """Truncate an augment-step-truncate cycle left open when training stopped (``variant="local"``)."""
        if self.integrator is not None:
            self.integrator.close_cycle()


@register_method
class TDLRTTraining(_IntegratedLowRankMethod):
    """TDLRT: Tucker convolutions and low-rank linears trained by the rank-adaptive augmented BUG step.

    Every convolution but the first becomes a :class:`~slimtrain.layers.TuckerFactorizedConv2d` and every
    linear but the last a :class:`~slimtrain.layers.MatrixFactorizedLinear`, from random orthonormal
    factors at ``r_max`` (``initial_rank_fraction`` to start lower). Per batch: two forward/backward
    passes (basis gradients, then the core step on the augmented bases) and a truncated HOSVD with tolerance
    ``tau`` (Zangrando et al., Alg. 1); ``variant="parallel"`` is the single-pass parallel BUG step,
    ``variant="local"`` augmented BUG with local S-iterations (the RobustDLRT practice).
    """

    name = "tdlrt"
    Options = TDLRTOptions
    conv_format = "tucker"


@register_method
class DLRTTraining(_IntegratedLowRankMethod):
    """Matrix DLRT: low-rank linears and convolutions stored as ``mat(W) = U S Vᵀ`` (Schotthöfer et al.).

    The DLRT baseline of the TDLRT paper: each kernel is reshaped to ``C_out × C_in k_h k_w`` and trained
    as a matrix by the same rank-adaptive integrator; ``passes: 3`` is the KLS step of the DLRT-Net code.
    """

    name = "dlrt"
    Options = DLRTOptions
    conv_format = "matrix"


@register_method
class FixedRankTraining(_LowRankMethod):
    """Vanilla fixed-rank factor training (a TDLRT baseline): unconstrained factors, plain optimizer.

    Convolutions become Tucker (``W = C ×_i A_i``) or matrix (``mat(W) = A Bᵀ``) factorizations and linears
    ``A Bᵀ``, with ``free_factors=True``: no orthonormality, no rank change; the recipe's optimizer trains
    every factor directly (weight decay included), one forward/backward pass per batch.
    """

    name = "fixed-rank"
    Options = FixedRankOptions
    level_option = "rank_fraction"

    def describe(self, model: nn.Module) -> dict[str, Any]:
        """Per-layer ranks and both eval compression rates (no augmentation: training stores the same)."""
        return {k: v for k, v in _report_fields(model).items() if not k.startswith("cr_percent_train")}

    def prepare(self, model: nn.Module) -> nn.Module:
        """Replace the convolutions and linears by free factorizations at ``rank_fraction``."""
        config = _conversion_config(
            self.options, self.options.conv_format, self.recipe, max_rank_fraction=1.0, free_factors=True
        )
        layers = convert_to_lowrank(model, config)
        if not layers:
            raise ValueError(f"method '{self.name}': the model has no layer to factorize")
        return model

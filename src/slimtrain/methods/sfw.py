"""Stochastic Frank-Wolfe training inside compression-friendly convex sets, as an engine method.

Zimmer, Spiegel, Pokutta, *Compression-aware Training of Neural Networks using Frank-Wolfe*,
arXiv:2205.11921 (k-support, group and spectral k-support balls), and Miao et al., *Learning
Pruning-Friendly Networks via Frank-Wolfe*, ICLR 2022 (K-sparse polytope). One dense training; the level
of compression is chosen afterwards, without retraining. Details: docs/sfw.md#method-details,
#the-optimizer, #evaluation-protocol and #faithful-and-corrected-behaviour.
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Annotated, Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from slimtrain.errors import RecipeError
from slimtrain.fw import SFW, ConstraintsConfig, build_constraints, resolve_k
from slimtrain.fw.builder import SETS_BY_MODE
from slimtrain.train.method import Method, register_method

__all__ = ["SFWMethod", "SFWOptions"]


class SFWOptions(BaseModel):
    """Options of the ``sfw`` method (``method.options`` of a recipe).

    The learning rate η and the momentum μ come from the recipe's ``optimizer`` section (the schedule
    scales η per step); its ``weight_decay`` must be 0, since the constraint is the regulariser.

    Attributes:
        mode: ``unstructured`` (the set on every tensor), ``filter`` (group k-support on conv weights) or
            ``lowrank`` (a spectral set on ``mat(W)`` of conv weights); in the structured modes every other
            tensor gets an L2 ball. The mode also fixes the compression the sweep applies.
        constraint: the set; ``None`` for the mode's default (``k_support``, ``group_k_support``,
            ``spectral_k_support``). ``k_sparse`` is Miao et al.'s K-sparse polytope.
        global_mode: one set over all tensors of a family instead of one per tensor (not for ``lowrank``).
        k: a fraction of n in ``(0, 1]`` or an absolute count ``> 1`` (n = entries, filters, or
            ``min(c_out, c_in·kh·kw)``).
        k_min: a floor on k (capped at n): Miao et al. use ``k = 0.05, k_min = 10``.
        tau: τ; the L2 diameter of each set is ``2·τ·E‖θ_init‖``.
        radius: every set's radius directly (instead of τ).
        diameter: every set's L2 diameter directly (instead of τ).
        p: the order of ``lp_ball``.
        momentum_convention: ``sum`` (d = 0; the paper's code, default) or ``ema`` (d = μ; Miao et al.).
        dampening: an explicit dampening that overrides the convention.
        rescale: ``gradient`` (default, the paper), ``fast_gradient``, ``diameter`` or ``none``.
        k_delay_epochs: delayed k: train with k at its maximum (the L2 ball of the same diameter) for this
            many epochs, then switch to k; converted to steps with the run's steps per epoch.
        k_delay_fraction: the delay as the paper's code gives it, a fraction δ of the run's epochs:
            ``max(1, int(δ·epochs))`` epochs (instead of ``k_delay_epochs``).
        k_switch: ``in_step`` (default): the switch happens inside the first step after the delay, whose
            gradient was taken before the shift; ``epoch_end`` (faithful to the paper's code): at the end of
            the delay's last epoch, between its last step and the next forward pass (whole epochs only).
        initial_shift: shift the initial weights inside the sets (corrected default); ``false`` is faithful
            to the paper's code, which starts from the raw initialization.
        radius_lookup: ``per_tensor`` (corrected default) or ``by_shape`` (faithful: the reference keys
            the initial norms by tensor shape, so same-shape tensors share one radius).
        group_select: ``topk`` (corrected default: exactly k filters) or ``kthvalue`` (faithful: ties
            can select more than k).
        spectral_solver: ``exact`` (default) or ``power`` (the reference's randomized block power method).
        radii: per-tensor radii ``{parameter name: radius}`` (local mode), e.g. a reference run's; the
            other tensors follow τ (or ``radius`` / ``diameter``). Unknown names are refused.
        radius_draw: ``seeded`` (corrected default: the estimate of ``E‖θ_init‖`` runs on a copy, with
            ``radius_seed``) or ``reference`` (faithful: on the live model from the global RNG, which
            re-randomizes the initial weights as the paper's code does; a resumed run keeps its radii).
        n_draws: re-initializations for the estimate of ``E‖θ_init‖``.
        radius_seed: seed of that estimate and of the power method (identical on every process).
    """

    model_config = ConfigDict(extra="forbid")

    mode: Literal["unstructured", "filter", "lowrank"] = "unstructured"
    constraint: (
        Literal[
            "k_support",
            "k_sparse",
            "lp_ball",
            "group_k_support",
            "spectral_k_support",
            "spectral_k_sparse",
            "nuclear",
        ]
        | None
    ) = None
    global_mode: bool = False
    k: float = Field(0.3, gt=0.0)
    k_min: int = Field(1, ge=1)
    tau: float = Field(10.0, gt=0.0)
    radius: float | None = Field(None, gt=0.0)
    diameter: float | None = Field(None, gt=0.0)
    p: float = Field(2.0, ge=1.0)
    momentum_convention: Literal["sum", "ema"] = "sum"
    dampening: float | None = Field(None, ge=0.0, le=1.0)
    rescale: Literal["gradient", "fast_gradient", "diameter", "none"] = "gradient"
    k_delay_epochs: float | None = Field(None, ge=0.0)
    k_delay_fraction: float | None = Field(None, gt=0.0, le=1.0)
    k_switch: Literal["in_step", "epoch_end"] = "in_step"
    initial_shift: bool = True
    radius_lookup: Literal["per_tensor", "by_shape"] = "per_tensor"
    radii: dict[str, Annotated[float, Field(gt=0.0)]] | None = None
    radius_draw: Literal["seeded", "reference"] = "seeded"
    group_select: Literal["topk", "kthvalue"] = "topk"
    spectral_solver: Literal["exact", "power"] = "exact"
    n_draws: int = Field(100, ge=1)
    radius_seed: int = 0

    @model_validator(mode="after")
    def _consistent(self) -> SFWOptions:
        if self.constraint is not None and self.constraint not in SETS_BY_MODE[self.mode]:
            raise ValueError(
                f"constraint '{self.constraint}' does not fit mode '{self.mode}'; "
                f"use one of {', '.join(SETS_BY_MODE[self.mode])}"
            )
        if self.radius is not None and self.diameter is not None:
            raise ValueError("give radius or diameter, not both")
        if self.radii is not None and self.global_mode:
            raise ValueError("radii are per tensor: they need global_mode false")
        if self.global_mode and self.mode == "lowrank":
            raise ValueError("global_mode is not defined for the spectral sets of mode 'lowrank'")
        if self.k_delay_epochs is not None and self.k_delay_fraction is not None:
            raise ValueError("give k_delay_epochs or k_delay_fraction, not both")
        if self.k_switch == "epoch_end":
            if self.k_delay_epochs is None and self.k_delay_fraction is None:
                raise ValueError("k_switch 'epoch_end' needs a delay: set k_delay_epochs or k_delay_fraction")
            if self.k_delay_epochs is not None and (
                self.k_delay_epochs < 1 or self.k_delay_epochs != int(self.k_delay_epochs)
            ):
                raise ValueError(
                    f"k_switch 'epoch_end' switches at an epoch's end: k_delay_epochs must be a whole number "
                    f"of epochs ≥ 1, got {self.k_delay_epochs}"
                )
        return self


@register_method
class SFWMethod(Method):
    """Stochastic Frank-Wolfe (arXiv:2205.11921; docs/sfw.md#the-sfw-step) with the sets of ``options.mode``.

    Builds the constraints with :func:`slimtrain.fw.build_constraints` and trains with
    :class:`slimtrain.fw.SFW` (η and μ from the recipe's optimizer section, no weight decay). Compression
    is chosen after training with the structure of the mode: global magnitude pruning (``unstructured``),
    L1 filter pruning (``filter``) or SVD truncation (``lowrank``).

    Corrected behaviour is the default (docs/sfw.md#faithful-and-corrected-behaviour); the faithful flags are
    ``momentum_convention='ema'`` (Miao), ``initial_shift=false``, ``radius_lookup='by_shape'``,
    ``radius_draw='reference'``, ``group_select='kthvalue'`` and ``spectral_solver='power'``. On resume the
    optimizer is rebuilt from its checkpoint and the initial shift is not applied again, so a resumed run
    reaches the weights of an uninterrupted one.

    Raises:
        RecipeError: the recipe's optimizer is not SGD-like (``name: sgd``, no Nesterov, no weight decay),
            or ``k_delay_epochs`` is set without the run's steps per epoch.
    """

    name = "sfw"
    Options = SFWOptions
    levels_chosen = "after_training"

    def __init__(self, options: BaseModel, recipe: Any) -> None:
        super().__init__(options, recipe)
        assert isinstance(options, SFWOptions)
        self.options: SFWOptions = options
        opt = recipe.optimizer
        if opt.name != "sgd" or opt.nesterov or opt.weight_decay != 0:
            raise RecipeError(
                "method 'sfw' takes lr and momentum from the optimizer section and adds no weight decay: "
                f"set optimizer.name: sgd, optimizer.nesterov: false, optimizer.weight_decay: 0 "
                f"(got name={opt.name!r}, nesterov={opt.nesterov}, weight_decay={opt.weight_decay})"
            )
        if options.rescale == "none" and opt.lr > 1:
            raise RecipeError(f"'optimizer.lr': rescale 'none' needs lr in [0, 1] (got {opt.lr})")
        self.structures = (options.mode,)  # each mode compresses with the structure of its name
        self._resumed = False

    def _k_rule(self) -> Any:
        k, k_min = self.options.k, self.options.k_min
        if k_min == 1:
            return k
        return lambda n: min(max(k_min, resolve_k(k, n)), n)

    def _delay_epochs(self) -> float | None:
        """The delay in epochs; a fraction δ becomes ``max(1, int(δ·epochs))`` as in the paper's code."""
        o = self.options
        if o.k_delay_fraction is not None:
            return max(1, int(o.k_delay_fraction * self.recipe.train.epochs))
        return o.k_delay_epochs

    def _delay_steps(self) -> int | None:
        epochs = self._delay_epochs()
        if epochs is None or self.options.k_switch == "epoch_end":
            return None
        if self.steps_per_epoch is None:
            raise RecipeError("'method.options.k_delay_epochs' needs the run's steps per epoch (train it)")
        return round(epochs * self.steps_per_epoch)

    def on_epoch_end(self, model: nn.Module, epoch: int) -> None:
        """With ``k_switch: epoch_end``, end delayed k after the last epoch of the delay."""
        if self.options.k_switch == "epoch_end" and epoch == self._delay_epochs():
            assert isinstance(self.optimizer, SFW)
            self.optimizer.switch_k()

    def build_optimizer(self, model: nn.Module) -> SFW:
        """Build the constraints for ``model`` and the :class:`~slimtrain.fw.SFW` optimizer over them."""
        o = self.options
        # The options carry ConstraintsConfig's field names, except k (with k_min) and seed (radius_seed).
        shared = {f.name for f in fields(ConstraintsConfig)} - {"k", "seed"}
        config = ConstraintsConfig(**o.model_dump(include=shared), k=self._k_rule(), seed=o.radius_seed)
        if self._resumed:
            # The radii come back with the optimizer state; a reference draw would re-randomize the weights.
            config = replace(config, radius_draw="seeded")
        groups = build_constraints(model, config)
        for group in groups:
            group.pop("names")  # plain names are not needed by the optimizer
        self.optimizer = SFW(
            groups,
            lr=self.recipe.optimizer.lr,
            momentum=self.recipe.optimizer.momentum,
            momentum_convention=o.momentum_convention,
            dampening=o.dampening,
            rescale=o.rescale,
            k_delay_steps=self._delay_steps(),
            k_switch="on_call" if o.k_switch == "epoch_end" else "in_step",
            # A resumed run's weights are already feasible; shifting them again would perturb them.
            initial_shift=o.initial_shift and not self._resumed,
        )
        return self.optimizer

    def describe(self, model: nn.Module) -> dict[str, Any]:
        """``max_gauge_ratio``: the largest ``‖θ‖_C / r`` over the constrained units (≤ 1 when feasible)."""
        if not isinstance(self.optimizer, SFW):
            return {}
        worst = 0.0
        for group in self.optimizer.param_groups:
            c = group["constraint"]
            if isinstance(c, list):
                pairs = [(ci, p.detach()) for ci, p in zip(c, group["params"], strict=True)]
            else:
                pairs = [(c, _flat_cat(group["params"]))]
            for ci, x in pairs:
                worst = max(worst, float(ci.gauge(x)) / ci.radius)
        return {"max_gauge_ratio": worst}

    def state_dict(self) -> dict[str, Any]:
        """Marks the state as coming from a started run (the optimizer state holds the rest)."""
        return {"started": True}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        """Remember that the run resumes, so :meth:`build_optimizer` does not shift the weights again."""
        self._resumed = bool(state.get("started", False))


def _flat_cat(params: list[nn.Parameter]) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in params])

"""Rank-adaptive augmented BUG integrator (TDLRT / matrix DLRT) driving a standard inner optimizer.

Zangrando et al., arXiv:2305.19059 (TDLRT); Schotthöfer et al., arXiv:2205.13571 (DLRT); Ceruti, Kusch &
Lubich, BIT 2022 (rank-adaptive BUG), the parallel BUG integrator of Ceruti, Kusch & Lubich, and augmented
BUG with local S-iterations (the RobustDLRT code, github.com/ScSteffen/RobustDLRT). The options live in one
frozen :class:`TDLRTConfig`; see ``docs/tdlrt.md`` ("The integrator").
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from slimtrain._config import is_int, is_real, with_options
from slimtrain.algebra.tucker import (
    complete_orthonormal,
    fold,
    multi_mode_product,
    rank_from_singular_values,
    unfold,
)
from slimtrain.layers.factor_base import MatrixFactorizedLayer, TuckerFactorizedLayer
from slimtrain.lowrank.basis_rules import orthonormal_augmentation
from slimtrain.lowrank.conversion import factorized_layers
from slimtrain.metrics.memory import OptimizerFactory

GradReducer = Callable[[list[Tensor]], None]

# Adam-type second moments are not rotation-equivariant: transported by the sqrt heuristic (docs/tdlrt.md,
# the integrator's `state_transport` option).
_SECOND_MOMENT_KEYS = ("exp_avg_sq", "max_exp_avg_sq")


class RankAtMinimumWarning(UserWarning):
    """The truncation tolerance would cut a layer's rank below its minimum; the message names the layer."""


@dataclass(frozen=True)
class TDLRTConfig:
    """The options of :class:`TDLRT` (everything but the model, the inner optimizer and the gradient reducer).

    Corrected behaviour is the default; the reference code's behaviour is a flag (``docs/tdlrt.md``, the
    integrator's options table).

    Attributes:
        tau: Truncation tolerance ≥ 0: relative (``ϑ = τ‖C̃‖_F``) or absolute (``absolute_tolerance=True``).
        absolute_tolerance: Use ``ϑ = tau`` (option of matrix DLRT).
        rank_policy: ``"adaptive"``, or ``"fixed"``: augment (capped at ``n_i``, whatever ``aug_cap``),
            step, then truncate back to the ranks held before the step (fixed-rank augmented BUG).
        variant: ``"two_pass"`` (default), ``"parallel"`` or ``"local"`` (one forward/backward per step).
        passes: Forward/backward passes of ``variant="two_pass"``: ``2`` (default: basis pass, then the core
            step) or ``3``, the KLS step of the DLRT-Net code (matrix layers only): a K pass and an L pass
            step ``K = US`` and ``L = VSᵀ`` with the inner optimizer (each with its own optimizer state,
            e.g. momentum), the bases are augmented with the stepped ``K`` and ``L``, and an S pass steps
            the augmented core and the non-factorized parameters.
        local_steps: Batches per cycle of ``variant="local"`` (an integer ≥ 2; authors: 10).
        cycle_phase: Where the cycles of ``variant="local"`` start: ``"global"`` (default: every
            ``local_steps`` integrator steps, across epochs); ``"epoch"`` (the RobustDLRT release script:
            cycles restart at each epoch's first batch; a cycle still open at an epoch's end is truncated
            by :meth:`TDLRT.close_cycle`); ``"epoch_offset"`` (the RobustDLRT trainer class: augment at
            batch index ``≡ 1``, step every other batch and truncate after the step at batch index ``≡ 0``
            (mod ``local_steps``), batch 0 of every epoch included). The two epoch phases need the batch's
            index in its epoch (:meth:`TDLRT.step`'s ``batch_index``).
        aug_cap: Augmentation cap ``r̄_i``: ``"rmax"`` (authors' code; a layer at ``r_max`` is not augmented)
            or ``"n"`` (BUG theory: up to the mode size).
        aug_select: ``"svd"`` (corrected default: the leading left singular vectors of ``(I − UUᵀ)G``) or
            ``"qr_columns"`` (faithful RobustDLRT: the first QR columns of ``[U | −G]``).
        truncation: ``"hosvd"`` (corrected default) or ``"dlrt_net"`` (faithful DLRT-Net off-by-one tail
            that keeps the old rank when no rank qualifies).
        state_transport: ``"rotate"`` (default: the core's optimizer state follows every basis change),
            ``"reset"`` (zero core state at every basis change) or ``"none"`` (DLRT-Net: buffers kept in
            place, cut or zero-padded to the new shape).
        max_grad_norm: Clip the gradient norm over the stepped parameters only (the RobustDLRT code clips
            before zeroing the basis gradients, shrinking the core step); ``None`` (default) or positive.
        update_bn_in_basis_pass: Faithful DLRT-Net behaviour: BatchNorm running statistics are updated in
            both passes. Default: only in the pass whose gradients are stepped.
        parallel_pinv_rtol: Relative cutoff ≥ 0 of the pseudo-inverse of ``Mat_i(C)`` in the parallel
            variant (``None``: torch's default).

    Raises:
        ValueError: A field has a wrong value; the message names the field.
    """

    tau: float = 0.1
    absolute_tolerance: bool = False
    rank_policy: Literal["adaptive", "fixed"] = "adaptive"
    variant: Literal["two_pass", "parallel", "local"] = "two_pass"
    passes: int = 2
    local_steps: int = 10
    cycle_phase: Literal["global", "epoch", "epoch_offset"] = "global"
    aug_cap: Literal["rmax", "n"] = "rmax"
    aug_select: Literal["svd", "qr_columns"] = "svd"
    truncation: Literal["hosvd", "dlrt_net"] = "hosvd"
    state_transport: Literal["rotate", "reset", "none"] = "rotate"
    max_grad_norm: float | None = None
    update_bn_in_basis_pass: bool = False
    parallel_pinv_rtol: float | None = None

    def __post_init__(self) -> None:
        def bad(field: str, why: str) -> ValueError:
            return ValueError(f"TDLRTConfig.{field}={getattr(self, field)!r}: {why}")

        if not (is_real(self.tau) and 0 <= self.tau < math.inf):
            raise bad("tau", "must be non-negative and finite")
        for field in ("absolute_tolerance", "update_bn_in_basis_pass"):
            if not isinstance(getattr(self, field), bool):
                raise bad(field, "must be a bool")
        for field, allowed in (
            ("rank_policy", ("adaptive", "fixed")),
            ("variant", ("two_pass", "parallel", "local")),
            ("aug_cap", ("rmax", "n")),
            ("aug_select", ("svd", "qr_columns")),
            ("truncation", ("hosvd", "dlrt_net")),
            ("state_transport", ("rotate", "reset", "none")),
            ("cycle_phase", ("global", "epoch", "epoch_offset")),
        ):
            if getattr(self, field) not in allowed:
                raise bad(field, f"is not one of {', '.join(allowed)}")
        if self.passes not in (2, 3) or isinstance(self.passes, bool):
            raise bad("passes", "must be 2 or 3")
        if self.passes == 3 and self.variant != "two_pass":
            raise bad("passes", f"3 (KLS) is a form of variant 'two_pass', not of {self.variant!r}")
        if self.cycle_phase != "global" and self.variant != "local":
            raise bad("cycle_phase", f"only variant 'local' has cycles (variant is {self.variant!r})")
        if not (is_int(self.local_steps) and self.local_steps >= 2):
            raise bad("local_steps", "must be an integer ≥ 2")
        if self.max_grad_norm is not None and not (is_real(self.max_grad_norm) and 0 < self.max_grad_norm):
            raise bad("max_grad_norm", "must be None or positive")
        rtol = self.parallel_pinv_rtol
        if rtol is not None and not (is_real(rtol) and 0 <= rtol < math.inf):
            raise bad("parallel_pinv_rtol", "must be None or non-negative and finite")


class TDLRT:
    """Rank-adaptive training of factorized layers with one inner ``torch.optim`` optimizer.

    Per batch, :meth:`step` runs (``variant="two_pass"``, the two-pass rank-adaptive augmented BUG step of
    Zangrando et al.; ``docs/tdlrt.md``, "The integrator"):

    1. ``closure()`` (forward + backward) for the basis gradients ``∇_{U_i}L``; nothing is stepped and
       BatchNorm running statistics are restored afterwards.
    2. Each adaptive mode's basis is augmented to ``Ũ_i = orth[U_i | ∇_{U_i}L]`` (width
       ``min(2 r_i, r̄_i)``), the core is transported, ``C̃ = C ×_i Ũ_iᵀU_i`` (the represented weight is
       unchanged), and so is the optimizer state of the core (:func:`transport_state_tensor`).
    3. ``closure()`` again on the same batch with the same random state (same dropout mask) and one inner
       optimizer step on every core and every non-factorized parameter: each is stepped once per batch.
    4. Every adaptive mode is truncated from the same augmented core by an HOSVD with relative tolerance
       ``tau`` and rank bounds ``[r_min, r_max]``; optimizer state follows.

    ``passes=3`` replaces passes 1–2 by the K and L passes of the DLRT-Net KLS step (Schotthöfer et al.,
    arXiv:2205.13571, Alg. 1): ``K = US`` and ``L = VSᵀ`` are stepped by the inner optimizer (which then
    holds one extra ``K`` and one ``L`` parameter per matrix layer, after the stepped parameters, with
    their own state), the bases are augmented with the stepped ``K`` and ``L``, and the S pass steps the
    augmented core. With plain SGD this spans the same bases as two passes; with momentum it does not.

    ``variant="parallel"`` is the single-pass parallel BUG step. ``variant="local"`` is augmented BUG with
    local S-iterations (the RobustDLRT practice), one forward/backward per batch: cycles of ``local_steps``
    batches, where the first batch's gradients augment the bases (no optimizer step), the next
    ``local_steps − 1`` batches step the cores and the non-factorized parameters with the bases frozen, and
    the last of them ends with the truncation; between augmentation and truncation the layers run at the
    augmented ranks. The factors ``U_i`` are never given to the inner optimizer (so no optimizer step and
    no weight decay touches them).

    ``TDLRT(model, factory, TDLRTConfig(tau=0.2, variant="parallel"))`` and
    ``TDLRT(model, factory, tau=0.2, variant="parallel")`` are the same integrator.

    ``grad_reducer`` is an argument of its own, not a field of :class:`TDLRTConfig`: the config is plain
    data (comparable, loggable with ``dataclasses.asdict``, the same on every process and reusable for the
    next run), while a reducer is a callable bound to this process's communication group — wiring to the
    runtime, like ``optimizer_factory``, that ``asdict`` would try to deep-copy and no log could record.

    Args:
        model: Model containing factorized layers (see :func:`convert_to_lowrank`).
        optimizer_factory: Builds the inner optimizer from the list of stepped parameters (cores first,
            then every other trainable parameter, then the ``K`` and ``L`` of ``passes=3``), e.g.
            ``lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9)``. Attach LR schedulers to :attr:`optimizer`.
        config: The integrator's options (:class:`TDLRTConfig`); ``None`` for the defaults.
        grad_reducer: Called to reduce, in place, a list of gradients before they are used: the adaptive
            factors' gradients, then the stepped parameters' gradients (e.g. an all-reduce average across
            data-parallel ranks). Use it instead of a ``DistributedDataParallel`` wrapper, whose bucket
            views do not follow rank changes. With averaged gradients every rank truncates identically.
        **options: Fields of :class:`TDLRTConfig` (``tau``, ``absolute_tolerance``, ``rank_policy``,
            ``variant``, ``passes``, ``local_steps``, ``cycle_phase``, ``aug_cap``, ``aug_select``,
            ``truncation``, ``state_transport``,
            ``max_grad_norm``, ``update_bn_in_basis_pass``, ``parallel_pinv_rtol``) that replace those of
            ``config``.

    Attributes:
        config: The options in effect (its fields are also attributes of the integrator: ``tau``, ...).

    Raises:
        TypeError: An option that is not a field of :class:`TDLRTConfig` (named, with the valid ones), or a
            ``grad_reducer`` that is not callable.
        ValueError: An invalid option (naming the field), a model without factorized layers, a layer with
            ``free_factors=True``, a Tucker layer with ``passes=3``, or a factory whose optimizer steps a
            factor.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer_factory: OptimizerFactory,
        config: TDLRTConfig | None = None,
        *,
        grad_reducer: GradReducer | None = None,
        **options: Any,
    ) -> None:
        self.config = cfg = with_options(TDLRTConfig, config, options, "TDLRT")
        if grad_reducer is not None and not callable(grad_reducer):
            raise TypeError(f"TDLRT: grad_reducer must be callable, got {type(grad_reducer).__name__}")
        self.model = model
        self.layers: dict[str, TuckerFactorizedLayer] = factorized_layers(model)
        if not self.layers:
            raise ValueError("TDLRT: the model has no factorized layer; call convert_to_lowrank first")
        for name, layer in self.layers.items():
            if layer.free_factors:
                raise ValueError(f"TDLRT: layer {name!r} has free_factors=True (vanilla factor training)")
        self.tau = float(cfg.tau)
        self.absolute_tolerance = cfg.absolute_tolerance
        self.rank_policy = cfg.rank_policy
        self.variant = cfg.variant
        self.passes = int(cfg.passes)
        self.local_steps = int(cfg.local_steps)
        self.cycle_phase = cfg.cycle_phase
        #: ``variant="local"``: the ranks held before the open cycle's augmentation (``None`` between cycles).
        self.cycle_ranks: dict[str, tuple[int, ...]] | None = None
        self.aug_cap = cfg.aug_cap
        #: The cap the bases are really augmented with: ``aug_cap``, except ``"n"`` under
        #: ``rank_policy="fixed"`` (the r_max cap would freeze the bases of fixed-rank layers at r_max).
        #: Training counts (``train_parameter_count_tucker``) must use this one.
        self.augmentation_cap = "n" if cfg.rank_policy == "fixed" else cfg.aug_cap
        self.aug_select = cfg.aug_select
        self.truncation = cfg.truncation
        self.state_transport = cfg.state_transport
        self.grad_reducer = grad_reducer
        self.max_grad_norm = cfg.max_grad_norm
        self.update_bn_in_basis_pass = cfg.update_bn_in_basis_pass
        self.parallel_pinv_rtol = cfg.parallel_pinv_rtol

        factor_ids = {id(u) for layer in self.layers.values() for u in layer.factors}
        cores = [layer.core for layer in self.layers.values()]
        core_ids = {id(c) for c in cores}
        others = [p for p in model.parameters() if p.requires_grad and id(p) not in factor_ids | core_ids]
        self.stepped_parameters: list[nn.Parameter] = cores + others
        #: ``passes=3``: per matrix layer, the ``K = US`` and ``L = VSᵀ`` parameters of its K and L passes.
        self.kls_parameters: dict[str, tuple[nn.Parameter, nn.Parameter]] = {}
        if self.passes == 3:
            for name, layer in self.layers.items():
                if not isinstance(layer, MatrixFactorizedLayer):
                    raise ValueError(
                        f"TDLRT: passes=3 (KLS) trains matrix layers only; layer {name!r} is a "
                        f"{type(layer).__name__}"
                    )
                self.kls_parameters[name] = tuple(nn.Parameter(t) for t in _kls_values(layer))
        kls = [p for pair in self.kls_parameters.values() for p in pair]
        self.optimizer = optimizer_factory(list(self.stepped_parameters) + kls)
        for group in self.optimizer.param_groups:
            if any(id(p) in factor_ids for p in group["params"]):
                raise ValueError("TDLRT: the inner optimizer must not hold factor parameters")
        self.step_count = 0
        self._floor_reported: set[tuple[str, int]] = set()
        #: Per layer, the last truncation's threshold and per-mode discarded tails (diagnostics, tests).
        self.last_truncation: dict[str, dict[str, Any]] = {}

    # ------------------------------------------------------------------------------------------ public
    @property
    def param_groups(self) -> list[dict[str, Any]]:
        """The inner optimizer's parameter groups."""
        return self.optimizer.param_groups

    def ranks(self) -> dict[str, tuple[int, ...]]:
        """Current ranks of every factorized layer."""
        return {name: layer.ranks for name, layer in self.layers.items()}

    def zero_grad(self) -> None:
        """Drop the gradients of every parameter of the model."""
        for param in self.model.parameters():
            param.grad = None

    def step(self, closure: Callable[[], Tensor], batch_index: int | None = None) -> Tensor:
        """One integrator step on one batch; returns the loss of the first pass (before the step).

        Args:
            closure: Runs forward and backward on the batch and returns the loss; it is called twice for
                ``variant="two_pass"`` (three times with ``passes=3``). Gradients are zeroed before each
                call.
            batch_index: The batch's 0-based index in its epoch; needed (only) by the epoch cycle phases
                of ``variant="local"``.

        Raises:
            ValueError: An epoch cycle phase without ``batch_index``.
        """
        if self.variant == "two_pass":
            step = self._kls_step if self.passes == 3 else self._two_pass_step
            loss = step(closure, self.ranks())
        elif self.variant == "parallel":
            loss = self._parallel_step(closure, self.ranks())
        else:
            if self.cycle_phase != "global" and batch_index is None:
                raise ValueError(f"TDLRT.step: cycle_phase={self.cycle_phase!r} needs the batch_index")
            loss = self._local_step(closure, batch_index)
        self.step_count += 1
        return loss

    def close_cycle(self) -> None:
        """Truncate now if a ``variant="local"`` cycle is open (e.g. when training stops mid-cycle)."""
        if self.cycle_ranks is not None:
            with torch.no_grad():
                for name, layer in self.layers.items():
                    self._truncate(name, layer, self.cycle_ranks[name])
            self.cycle_ranks = None

    def state_dict(self) -> dict[str, Any]:
        """Inner optimizer state, ranks per layer and step count (save with the model's ``state_dict``)."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "ranks": {name: list(r) for name, r in self.ranks().items()},
            "step_count": self.step_count,
            "cycle_ranks": ranks_as_lists(self.cycle_ranks),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`; load the model's ``state_dict`` first (it adopts the saved ranks).

        Raises:
            ValueError: The saved layers or ranks differ from the model's.
        """
        saved = {name: tuple(r) for name, r in state_dict["ranks"].items()}
        if saved.keys() != self.layers.keys():
            raise ValueError(
                f"TDLRT: saved layers {sorted(saved)} differ from the model's {sorted(self.layers)}"
            )
        for name, ranks in saved.items():
            if self.layers[name].ranks != ranks:
                raise ValueError(
                    f"TDLRT: layer {name!r} has ranks {self.layers[name].ranks}, the checkpoint {ranks}; "
                    "load the model's state_dict before the integrator's"
                )
        self._refresh_kls()
        self.optimizer.load_state_dict(state_dict["optimizer"])
        self.step_count = int(state_dict["step_count"])
        self.cycle_ranks = ranks_as_tuples(state_dict.get("cycle_ranks"))

    # -------------------------------------------------------------------------------------- the steps
    def _two_pass_step(
        self, closure: Callable[[], Tensor], ranks_before: dict[str, tuple[int, ...]]
    ) -> Tensor:
        bn_buffers = None if self.update_bn_in_basis_pass else self._bn_snapshot()
        rng = _rng_snapshot()
        loss = self._run_closure(closure)
        self._reduce([u.grad for layer in self.layers.values() for u in self._adaptive_factors(layer)])
        with torch.no_grad():
            for layer in self.layers.values():
                self._augment(layer)
        if bn_buffers is not None:
            _bn_restore(bn_buffers)
        self._core_pass_and_truncate(closure, rng, ranks_before)
        return loss

    def _core_pass_and_truncate(
        self,
        closure: Callable[[], Tensor],
        rng: tuple[Tensor, list[Tensor] | None],
        ranks_before: dict[str, tuple[int, ...]],
    ) -> None:
        """The pass on the augmented bases (the first pass's random draws), its inner step, the truncation."""
        _rng_restore(rng)
        self._run_closure(closure)
        self._step_inner()
        with torch.no_grad():
            for name, layer in self.layers.items():
                self._truncate(name, layer, ranks_before[name])

    def _parallel_step(
        self, closure: Callable[[], Tensor], ranks_before: dict[str, tuple[int, ...]]
    ) -> Tensor:
        loss = self._run_closure(closure)
        self._reduce([u.grad for layer in self.layers.values() for u in self._adaptive_factors(layer)])
        with torch.no_grad():
            plans = {name: self._parallel_directions(layer) for name, layer in self.layers.items()}
        self._step_inner()
        with torch.no_grad():
            for name, layer in self.layers.items():
                self._parallel_assemble(layer, *plans[name])
                self._truncate(name, layer, ranks_before[name])
        return loss

    def _kls_step(self, closure: Callable[[], Tensor], ranks_before: dict[str, tuple[int, ...]]) -> Tensor:
        """DLRT-Net's KLS step: K pass, L pass (each stepped), augmentation, S pass, truncation."""
        bn_buffers = None if self.update_bn_in_basis_pass else self._bn_snapshot()
        rng = _rng_snapshot()
        before = {
            name: (layer.core.detach().clone(), _linalg_copies(layer.factors))
            for name, layer in self.layers.items()
        }
        loss = None
        self._refresh_kls()
        for side in (0, 1):  # the K pass (U ← K = US), then the L pass (V ← L = VSᵀ)
            with torch.no_grad():
                for name, layer in self.layers.items():
                    core, factors = before[name]
                    factors = list(factors)
                    factors[side] = self.kls_parameters[name][side].detach()
                    identity = torch.eye(core.shape[1 - side], dtype=core.dtype, device=core.device)
                    layer.set_factorization(identity, factors)
            _rng_restore(rng)
            pass_loss = self._run_closure(closure)
            loss = pass_loss if loss is None else loss
            for name, layer in self.layers.items():
                self.kls_parameters[name][side].grad = layer.factors[side].grad
            if bn_buffers is not None:
                _bn_restore(bn_buffers)
        with torch.no_grad():
            for name, layer in self.layers.items():
                layer.set_factorization(*before[name])
        self.zero_grad()
        self._step_subset([p for pair in self.kls_parameters.values() for p in pair])
        with torch.no_grad():
            for name, layer in self.layers.items():
                self._augment(layer, [p.detach() for p in self.kls_parameters[name]])
        self._core_pass_and_truncate(closure, rng, ranks_before)
        with torch.no_grad():
            for name, layer in self.layers.items():
                self._transport_kls_state(name, layer, before[name][1])
        return loss

    def _local_step(self, closure: Callable[[], Tensor], batch_index: int | None) -> Tensor:
        count = self.step_count if self.cycle_phase == "global" else batch_index
        position = count % self.local_steps
        augment_at, truncate_at = (1, 0) if self.cycle_phase == "epoch_offset" else (0, self.local_steps - 1)
        loss = self._run_closure(closure)
        if position == augment_at:
            # Open a cycle: this batch's gradients only augment the bases (local S-iterations). A cycle left
            # open (an epoch that ended without close_cycle) is truncated first.
            self.close_cycle()
            self.cycle_ranks = self.ranks()
            self._reduce([u.grad for layer in self.layers.values() for u in self._adaptive_factors(layer)])
            with torch.no_grad():
                for layer in self.layers.values():
                    self._augment(layer)
            return loss
        self._step_inner()
        if position == truncate_at:
            if self.cycle_ranks is None and self.cycle_phase == "epoch_offset":
                # The RobustDLRT trainer truncates at batch 0 of every epoch, augmented or not.
                self.cycle_ranks = self.ranks()
            self.close_cycle()
        return loss

    def _run_closure(self, closure: Callable[[], Tensor]) -> Tensor:
        self.zero_grad()
        with torch.enable_grad():
            loss = closure()
        return loss.detach() if isinstance(loss, Tensor) else loss

    def _step_inner(self) -> None:
        for layer in self.layers.values():
            for u in layer.factors:
                u.grad = None
        self._step_subset(self.stepped_parameters)

    def _step_subset(self, parameters: list[nn.Parameter]) -> None:
        """Reduce, clip and step the gradients of ``parameters``, the only ones holding gradients now."""
        self._reduce([p.grad for p in parameters])
        if self.max_grad_norm is not None:
            nn.utils.clip_grad_norm_(parameters, self.max_grad_norm)
        self.optimizer.step()
        for pair in self.kls_parameters.values():
            for p in pair:
                p.grad = None

    def _reduce(self, grads: Sequence[Tensor | None]) -> None:
        if self.grad_reducer is not None:
            present = [g for g in grads if g is not None]
            if present:
                self.grad_reducer(present)

    @staticmethod
    def _adaptive_factors(layer: TuckerFactorizedLayer) -> list[nn.Parameter]:
        return [layer.factors[m] for m in layer.adaptive_modes]

    # ----------------------------------------------------------------------------- basis operations
    def _augment(self, layer: TuckerFactorizedLayer, directions: Sequence[Tensor] | None = None) -> None:
        """Two-pass steps 2–3: ``Ũ_i = orth[U_i | G_i]``, ``C̃ = C ×_i Ũ_iᵀU_i``, state likewise.

        ``directions`` replaces the gradients ``G_i`` (the KLS step augments with the stepped ``K``, ``L``).
        """
        factors = _linalg_copies(layer.factors)
        widths = layer.augmented_ranks(self.augmentation_cap)
        maps: dict[int, Tensor] = {}
        for mode in layer.adaptive_modes:
            grad = layer.factors[mode].grad if directions is None else directions[mode]
            if grad is None:  # the layer took no part in the loss: nothing to add
                continue
            factors[mode], maps[mode] = orthonormal_augmentation(
                factors[mode],
                grad.to(factors[mode].dtype),
                widths[mode] - factors[mode].shape[1],
                select=self.aug_select,
            )
        self._change_basis(layer, maps, factors)

    def _truncate(self, name: str, layer: TuckerFactorizedLayer, ranks_before: tuple[int, ...]) -> None:
        """Truncated HOSVD of the augmented core, every mode from the same core (tolerance ``tau``)."""
        (core,) = _linalg_copies([layer.core])
        norm = float(torch.linalg.vector_norm(core))
        threshold = self.tau if self.absolute_tolerance else self.tau * norm
        factors = _linalg_copies(layer.factors)
        maps: dict[int, Tensor] = {}
        tails: dict[int, float] = {}
        for mode in layer.adaptive_modes:
            left, sigma, _ = torch.linalg.svd(unfold(core, mode), full_matrices=False)
            if self.rank_policy == "fixed":
                rank = ranks_before[mode]
            else:
                wanted = rank_from_singular_values(
                    sigma,
                    threshold,
                    faithful_dlrt_net=self.truncation == "dlrt_net",
                    fallback=ranks_before[mode],
                )
                if wanted < layer.min_ranks[mode]:
                    self._report_rank_floor(name, mode, wanted, layer.min_ranks[mode])
                rank = min(max(wanted, layer.min_ranks[mode]), layer.max_ranks[mode])
            rank = min(rank, core.shape[mode])
            tails[mode] = float(torch.linalg.vector_norm(sigma[rank:]))
            kept = complete_orthonormal(left[:, :rank], rank)
            maps[mode] = kept.T
            factors[mode] = factors[mode] @ kept
        self.last_truncation[name] = {"threshold": threshold, "core_norm": norm, "tails": tails}
        self._change_basis(layer, maps, factors)

    def _report_rank_floor(self, name: str, mode: int, wanted: int, floor: int) -> None:
        """Warn (once per layer and mode) that the tolerance would cut a rank below its minimum ``r_min``.

        The rank is held at ``r_min``; a collapse there usually means ``tau`` is too large for
        this layer, or its gradients vanished, and deserves a look rather than silence.
        """
        if (name, mode) in self._floor_reported:
            return
        self._floor_reported.add((name, mode))
        warnings.warn(
            RankAtMinimumWarning(
                f"TDLRT: layer {name!r} mode {mode}: tau={self.tau:g} keeps {wanted} direction(s), below the "
                f"minimum rank {floor}; rank held at {floor} (integrator step {self.step_count})"
            ),
            stacklevel=2,
        )

    def _parallel_directions(
        self, layer: TuckerFactorizedLayer
    ) -> tuple[list[Tensor], dict[int, Tensor], dict]:
        """Parallel BUG: ``D_i = G_i · pinv(Mat_i(C))ᵀ = ∇_{K_i}L · Q_iᵀ`` and augmented bases (old point)."""
        (core,) = _linalg_copies([layer.core])
        factors = _linalg_copies(layer.factors)
        widths = layer.augmented_ranks(self.augmentation_cap)
        maps: dict[int, Tensor] = {}
        directions: dict[int, Tensor] = {}
        for mode in layer.adaptive_modes:
            grad = layer.factors[mode].grad
            if grad is None:
                continue
            pinv = torch.linalg.pinv(unfold(core, mode), rtol=self.parallel_pinv_rtol)
            directions[mode] = grad.to(pinv.dtype) @ pinv.T
            factors[mode], maps[mode] = orthonormal_augmentation(
                factors[mode], directions[mode], widths[mode] - core.shape[mode], select=self.aug_select
            )
        return factors, maps, directions

    def _parallel_assemble(
        self,
        layer: TuckerFactorizedLayer,
        factors: list[Tensor],
        maps: dict[int, Tensor],
        directions: dict[int, Tensor],
    ) -> None:
        """Augmented core: stepped old block plus the single-new-mode blocks ``−λ Ten_i(Û_iᵀ D_i)``."""
        lr = next(g["lr"] for g in self.optimizer.param_groups if any(p is layer.core for p in g["params"]))
        old_bases = _linalg_copies(layer.factors)
        old_shape = tuple(layer.core.shape)
        blocks = old_bases[0].new_zeros([f.shape[1] for f in factors])
        for mode, direction in directions.items():
            basis = old_bases[mode]
            orthogonal = direction - basis @ (basis.T @ direction)
            shape = list(old_shape)
            shape[mode] = factors[mode].shape[1]
            block = fold(factors[mode].T @ orthogonal, mode, shape)
            blocks += multi_mode_product(block, {j: m for j, m in maps.items() if j != mode})
        self._change_basis(layer, maps, factors)
        layer.core.data.add_(blocks.to(layer.core.dtype), alpha=-lr)

    def _change_basis(
        self, layer: TuckerFactorizedLayer, maps: dict[int, Tensor], factors: list[Tensor]
    ) -> None:
        """Set ``C ← C ×_i R_i`` and the new factors; transport the core's optimizer state with ``R_i``."""
        if not maps:
            return
        (core,) = _linalg_copies([layer.core])
        new_core = multi_mode_product(core, maps)
        state = self.optimizer.state.get(layer.core)
        if state:
            for key, value in list(state.items()):
                if isinstance(value, Tensor) and value.shape == layer.core.shape:
                    state[key] = transport_state_tensor(
                        key, value, maps, new_core.shape, self.state_transport
                    )
        layer.set_factorization(new_core, factors)

    def _refresh_kls(self) -> None:
        """Set every ``K`` and ``L`` parameter of ``passes=3`` to ``US`` and ``VSᵀ`` of the current layers."""
        with torch.no_grad():
            for name, pair in self.kls_parameters.items():
                for param, value in zip(pair, _kls_values(self.layers[name]), strict=True):
                    param.data = value.to(param)

    def _transport_kls_state(
        self, name: str, layer: TuckerFactorizedLayer, old_factors: list[Tensor]
    ) -> None:
        """Carry the K and L optimizer state to the new bases: ``b_K ← b_K V_oldᵀ V_new`` (L: with ``U``).

        The columns of ``K = US`` are coordinates in the basis ``V`` (of ``L``, in ``U``); ``state_transport``
        applies as to the core (``"none"``: kept in place, cut or zero-padded).
        """
        new_values = _kls_values(layer)
        for side, param in enumerate(self.kls_parameters[name]):
            other = 1 - side
            new_basis = layer.factors[other].detach().to(old_factors[other].dtype)
            rotation = {1: new_basis.T @ old_factors[other]}
            state = self.optimizer.state.get(param)
            for key, value in list((state or {}).items()):
                if isinstance(value, Tensor) and value.shape == param.shape:
                    state[key] = transport_state_tensor(
                        key, value, rotation, new_values[side].shape, self.state_transport
                    )
            param.data = new_values[side].to(param)

    # ------------------------------------------------------------------------ pass-local side effects
    def _bn_snapshot(self) -> list[tuple[Tensor, Tensor]]:
        pairs = []
        for module in self.model.modules():
            if isinstance(module, _BatchNorm):
                pairs += [(b, b.detach().clone()) for b in module.buffers(recurse=False) if b is not None]
        return pairs


def transport_state_tensor(
    key: str,
    value: Tensor,
    maps: dict[int, Tensor],
    shape: Sequence[int],
    mode: Literal["rotate", "reset", "none"] = "rotate",
) -> Tensor:
    """Carry one core-shaped optimizer-state tensor through a basis change ``C ← C ×_i R_i``.

    Args:
        key: State key; ``exp_avg_sq`` / ``max_exp_avg_sq`` (Adam second moments) use the heuristic
            ``v ← (sqrt(v) ×_i R_i)^{∘2}``, every other key the exact linear map ``b ← b ×_i R_i``.
        value: The state tensor, shaped like the core before the change.
        maps: ``R_i`` per changed mode (``M_i = Ũ_iᵀU_i`` at augmentation, ``P̄_iᵀ`` at truncation).
        shape: The core's new shape.
        mode: ``"rotate"`` (default), ``"reset"`` (zeros) or ``"none"`` (faithful DLRT-Net: the buffer is kept
            in place, cut or zero-padded to the new shape).
    """
    if mode == "reset":
        return value.new_zeros(shape)
    if mode == "none":
        out = value.new_zeros(shape)
        overlap = tuple(slice(0, min(a, b)) for a, b in zip(value.shape, shape, strict=True))
        out[overlap] = value[overlap]
        return out
    cast = {m: r.to(value.dtype) for m, r in maps.items()}
    if key in _SECOND_MOMENT_KEYS:
        return multi_mode_product(value.sqrt(), cast).square().contiguous()
    return multi_mode_product(value, cast).contiguous()


def _kls_values(layer: TuckerFactorizedLayer) -> tuple[Tensor, Tensor]:
    """``(K, L) = (U S, V Sᵀ)`` of a matrix layer ``W = U S Vᵀ``, detached and contiguous."""
    (u, v), core = [f.detach() for f in layer.factors], layer.core.detach()
    return (u @ core).contiguous(), (v @ core.T).contiguous()


def ranks_as_lists(ranks: dict[str, tuple[int, ...]] | None) -> dict[str, list[int]] | None:
    """Per-layer ranks as plain lists, for a checkpoint (``None`` stays ``None``)."""
    return None if ranks is None else {name: list(r) for name, r in ranks.items()}


def ranks_as_tuples(ranks: dict[str, list[int]] | None) -> dict[str, tuple[int, ...]] | None:
    """Per-layer ranks read back from a checkpoint as tuples of ints (``None`` stays ``None``)."""
    return None if ranks is None else {name: tuple(int(x) for x in r) for name, r in ranks.items()}


def _linalg_copies(tensors: Sequence[Tensor]) -> list[Tensor]:
    """Detached copies in a dtype fit for QR/SVD: half precisions are promoted to float32 (docs/tdlrt.md)."""
    return [t.detach().to(torch.promote_types(t.dtype, torch.float32)) for t in tensors]


def _bn_restore(pairs: list[tuple[Tensor, Tensor]]) -> None:
    with torch.no_grad():
        for buffer, saved in pairs:
            buffer.copy_(saved)


def _rng_snapshot() -> tuple[Tensor, list[Tensor] | None]:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    return torch.get_rng_state(), cuda


def _rng_restore(snapshot: tuple[Tensor, list[Tensor] | None]) -> None:
    cpu, cuda = snapshot
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)

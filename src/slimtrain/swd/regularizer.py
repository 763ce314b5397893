"""Selective Weight Decay, the regularizer (docs/swd.md).

Tessier et al., "Continuous Pruning of Deep Convolutional Networks Using Selective Weight Decay",
arXiv:2011.10520.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor, nn

from slimtrain._materialized import refuse_sparse_gradients
from slimtrain.errors import UnsupportedModelError
from slimtrain.layers.prunable import computed_weight
from slimtrain.swd.schedule import ExponentialSchedule
from slimtrain.swd.selection import Selected, Selection
from slimtrain.swd.stability import is_stable, stability_limit

__all__ = ["SelectiveWeightDecay"]


class SelectiveWeightDecay:
    """Extra weight decay on the weights that pruning to the target would remove now, growing per step.

    Term added to the loss at step t: μ·R_t(w) = ½·μ·a_t·Σ_{selected j} w_j², whose gradient is μ·a_t·w_j on
    selected entries and 0 elsewhere; with the optimizer's own weight decay μ, selected weights decay with
    μ(1 + a_t) and the others with μ (docs/swd.md#objective-and-selection). The selection is recomputed from
    the current, detached weights at every call (no gradient through it); a_t follows
    :class:`ExponentialSchedule`.

    Use it either as a loss term, ``loss = criterion(out, y) + swd.penalty(model)``, or as a gradient hook,
    ``loss.backward(); swd.apply_(model); optimizer.step()``; both give the same gradient. Call
    :meth:`step` once per mini-batch, after ``optimizer.step()``.

    Args:
        selection: What is selected: :class:`~slimtrain.swd.selection.MagnitudeSelection` (unstructured) or
            :class:`~slimtrain.swd.structured.ChannelSelection` (structured).
        weight_decay: μ, the optimizer's weight decay (reference 5e-4). When the optimizer runs without
            weight decay, pass the reference ``--mu`` here.
        total_steps: T = epochs × batches per epoch of the regularised phase.
        a_min: a_0 (reference 0.1).
        a_max: a_T (reference 1e5). ``a_min == a_max`` gives a constant a (the reference ``fix_a``).
        optimizer: When given, every :meth:`penalty` / :meth:`apply_` checks the stability bound of each of
            its SGD param groups (those with a ``momentum`` entry) and warns once when
            lr·(weight_decay_group + μ·a_t) ≥ 2(1 + momentum) (docs/swd.md#stability).
        track_migration: Keep the previous selection to report :attr:`migration` (docs/swd.md#diagnostics), at
        the cost
            of one byte per penalised entry.

    Attributes:
        step_count: Global mini-batch index t.
        migration: With ``track_migration``, (entered, left): entries that joined and left the selected set
            between the last two selections; None before the second.

    Raises:
        ValueError: If ``weight_decay`` is negative or the schedule is invalid.
    """

    def __init__(
        self,
        selection: Selection,
        weight_decay: float,
        total_steps: int,
        a_min: float = 0.1,
        a_max: float = 1e5,
        optimizer: torch.optim.Optimizer | None = None,
        track_migration: bool = False,
    ) -> None:
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        self.selection = selection
        self.weight_decay = float(weight_decay)
        self.schedule = ExponentialSchedule(a_min, a_max, total_steps)
        self.optimizer = optimizer
        self.step_count = 0
        self._warned = False
        self.track_migration = track_migration
        self._previous: Tensor | None = None
        self.migration: tuple[int, int] | None = None

    @property
    def a(self) -> float:
        """Current coefficient a_t."""
        return self.schedule(self.step_count)

    def step(self) -> None:
        """Advance the schedule by one mini-batch."""
        self.step_count += 1

    def penalty(self, model: nn.Module) -> Tensor:
        """½·μ·a_t·Σ_selected w², differentiable in the weights (float32 at least), to add to the loss."""
        selected = self._select(model)
        coefficient = 0.5 * self.weight_decay * self.a
        terms = [
            (s.param.to(torch.promote_types(s.param.dtype, torch.float32)) * s.removed).square().sum()
            for s in selected
        ]
        return coefficient * torch.stack(terms).sum()

    @torch.no_grad()
    def apply_(self, model: nn.Module) -> None:
        """Add μ·a_t·w to ``.grad`` of the selected entries; call after ``backward``, before the step.

        A computed weight (a ``weight_norm`` parametrization) gets the penalty's gradient through its
        parametrization, in the ``.grad`` of the parameters it is computed from, as :meth:`penalty` would.

        Raises:
            UnsupportedModelError: A selected weight of an embedding with ``sparse=True`` (its sparse
                gradient cannot take the dense term; :meth:`penalty` can), before any gradient is changed.
        """
        coefficient = self.weight_decay * self.a
        selected = self._select(model)
        refuse_sparse_gradients(
            model,
            "SelectiveWeightDecay.apply_",
            {s.name for s in selected},
            "or add swd.penalty(model) to the loss instead of calling apply_",
        )
        for s in selected:
            if isinstance(s.param, nn.Parameter):
                if s.param.grad is None:
                    s.param.grad = torch.zeros_like(s.param)
                s.param.grad.addcmul_(s.param, s.removed, value=coefficient)
                continue
            module, name = _owner(model, s.name)
            with torch.enable_grad():
                weight = computed_weight(module, name)  # recomputed with its graph to the originals
                weight.backward(weight.detach() * s.removed * coefficient)

    @torch.no_grad()
    def shrink_(self, model: nn.Module, lr: float) -> None:
        """Decoupled alternative to the penalty: w ← max(0, 1 − η·μ·a_t)·w on the selected entries.

        Not faithful to the reference (docs/swd.md#stability): call it after ``optimizer.step()`` instead of
        :meth:`penalty` / :meth:`apply_`. It never overshoots, whatever η·μ·a_t, so it stays stable where the
        gradient form would diverge; the factor is clamped at 0 so a selected weight never changes sign.

        Args:
            model: The model.
            lr: The learning rate η of the step just taken.
        """
        factor = max(0.0, 1.0 - lr * self.weight_decay * self.a)
        for s in self._select(model):
            if not isinstance(s.param, nn.Parameter):
                module, _ = _owner(model, s.name)
                raise UnsupportedModelError(
                    f"SWD's shrink_ scales weights in place, but {s.name!r} is computed by a parametrization "
                    f"of {s.name.rpartition('.')[0] or '<root>'!r} ({type(module).__name__}); use penalty() "
                    "or apply_(), or remove the parametrization first "
                    "(torch.nn.utils.parametrize.remove_parametrizations)"
                )
            s.param.addcmul_(s.param, s.removed, value=factor - 1.0)

    def _select(self, model: nn.Module) -> list[Selected]:
        if self.optimizer is not None:
            self.check_stability(self.optimizer)
        selected = self.selection.select(model)
        if self.track_migration:
            current = torch.cat([s.removed.reshape(-1) for s in selected])
            if self._previous is not None and self._previous.shape == current.shape:
                self.migration = (
                    int((current & ~self._previous).sum()),
                    int((self._previous & ~current).sum()),
                )
            self._previous = current
        return selected

    def check_stability(self, optimizer: torch.optim.Optimizer) -> bool:
        """Check η·(μ_group + μ·a_t) < 2(1 + β) for every SGD param group; warn once when it fails.

        Args:
            optimizer: An optimizer whose groups carry ``lr`` and ``momentum`` (groups without ``momentum``,
                e.g. Adam's, are not heavy-ball SGD and are skipped).

        Returns:
            True when every checked group is below the bound.
        """
        stable = True
        for index, group in enumerate(optimizer.param_groups):
            if "momentum" not in group:
                continue
            lr, momentum = float(group["lr"]), float(group["momentum"])
            curvature = float(group.get("weight_decay", 0.0)) + self.weight_decay * self.a
            if not is_stable(lr, curvature, momentum):
                stable = False
                if not self._warned:
                    self._warned = True
                    warnings.warn(
                        f"SWD may diverge: param group {index} has lr·(wd + μ·a) = {lr * curvature:.4g} ≥ "
                        f"2(1 + momentum) = {stability_limit(momentum):.4g} at step {self.step_count} "
                        f"(a = {self.a:.4g}); lower the learning rate, a_max or the weight decay",
                        RuntimeWarning,
                        stacklevel=3,
                    )
        return stable

    def state_dict(self) -> dict[str, Any]:
        """Schedule position and settings, for checkpoints."""
        return {
            "step_count": self.step_count,
            "weight_decay": self.weight_decay,
            "a_min": self.schedule.a_min,
            "a_max": self.schedule.a_max,
            "total_steps": self.schedule.total_steps,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned.

        Raises:
            KeyError: If a key is missing.
        """
        missing = {"step_count", "weight_decay", "a_min", "a_max", "total_steps"} - set(state_dict)
        if missing:
            raise KeyError(f"SWD state_dict lacks {sorted(missing)}")
        self.weight_decay = float(state_dict["weight_decay"])
        self.schedule = ExponentialSchedule(
            state_dict["a_min"], state_dict["a_max"], state_dict["total_steps"]
        )
        self.step_count = int(state_dict["step_count"])

    def prune(self, model: nn.Module) -> dict[str, Tensor]:
        """Hard-prune ``model`` at the target with the training selection rule; see ``prune_to_target``."""
        from slimtrain.swd.prune import prune_to_target

        return prune_to_target(model, self.selection)


def _owner(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    """The module and local name of a computed weight named ``"<module>.<name>"``."""
    module_name, _, local = name.rpartition(".")
    return model.get_submodule(module_name), local

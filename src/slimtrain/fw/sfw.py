"""The Stochastic Frank-Wolfe optimizer.

Zimmer, Spiegel, Pokutta, "Compression-aware Training of Neural Networks using Frank-Wolfe",
arXiv:2205.11921; Pokutta, Spiegel, Zimmer, arXiv:2010.07243; docs/sfw.md#the-sfw-step,
#feasibility-shift-and-delayed-k, #faithful-and-corrected-behaviour.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from typing import Any, Literal

import torch
from torch import Tensor
from torch.optim import Optimizer

from slimtrain.fw.base import ZERO_GRAD_NORM, ConstraintSet, KConstraintSet, constraint_from_config

__all__ = ["SFW"]

RescaleMode = Literal["gradient", "fast_gradient", "diameter", "none"]
MomentumConvention = Literal["sum", "ema"]
KSwitch = Literal["in_step", "on_call"]
_RESCALE_MODES = ("gradient", "fast_gradient", "diameter", "none")
_CONVENTIONS = ("sum", "ema")
_K_SWITCHES = ("in_step", "on_call")
# Units larger than this run their LMO alone on views of the parameter: stacking them would only add copies.
_STACK_LIMIT = 4096


class SFW(Optimizer):
    """Stochastic Frank-Wolfe with momentum and learning-rate rescaling (docs/sfw.md#the-sfw-step).

    Every param group carries its constraint under the key ``"constraint"``: either a list with one
    :class:`ConstraintSet` per parameter (local mode), or a single set over the concatenation of all the
    group's parameters, flattened in order (global mode). Per constraint unit and step:

    1. momentum ``m ← μ·m + (1 − d)·g`` (``m = g`` on the first step; a missing gradient counts as 0);
    2. ``v = LMO(m)`` (``v = 0`` when ``‖m‖ < 1e-10``);
    3. ``γ = clamp(lr·φ, 0, 1)`` with ``φ = ‖m‖/‖θ − v‖`` (``"gradient"``, γ = 0 when ``θ = v``),
       ``‖m‖/(D/2)`` (``"fast_gradient"``), ``1/D`` (``"diameter"``) or ``1`` (``"none"``);
    4. ``θ ← (1 − γ)·θ + γ·v``, a convex combination, so feasible iterates stay feasible.

    Momentum convention: ``"sum"`` (default, dampening ``d = 0``, heavy ball) is the convention of the
    paper's own code, so its learning rates apply unchanged; ``"ema"`` (``d = μ``) is that of Miao et al. and
    the 2020 code. With μ = 0.9 the ``"sum"`` buffer is about 10× larger: learning rates do not transfer
    between conventions. No weight decay: the constraint is the regulariser.

    The whole step is skipped (parameters and momentum untouched) when any gradient is non-finite, so the
    optimizer works with ``torch.amp.GradScaler``, whose ``step`` hands it unscaled gradients. The step
    never synchronises with the host: the finite check is a flag on the device that turns the update into
    a no-op (``γ = 0``, momentum kept; the non-finite gradients are zeroed in place), and the step counter
    of :attr:`state` counts calls, skipped ones included. Within slimtrain's trainer a non-finite gradient
    stops training at the next log step anyway (docs/reliability.md).

    Work is batched: within a group, units whose sets differ only by radius are stacked and share one
    LMO call. Constraint sets are treated as immutable values: replace them (``with_radius``) rather than
    mutating them.

    Args:
        params: parameters or param groups; each group needs a ``"constraint"``.
        lr: learning rate η (scheduled per iteration by any ``torch.optim.lr_scheduler``).
        momentum: μ in ``[0, 1)``.
        momentum_convention: ``"sum"`` (default) or ``"ema"``; sets the dampening unless ``dampening``
            is given.
        dampening: explicit dampening ``d``, overriding the convention.
        rescale: ``"gradient"`` (default, the paper's mode with theory), ``"fast_gradient"``,
            ``"diameter"`` (2020 paper) or ``"none"`` (then ``lr`` must lie in ``[0, 1]``).
        k_delay_steps: delayed k (arXiv:2205.11921; docs/sfw.md, "Delayed k"): for this many steps
            every k-set is used with ``k`` at its maximum and the same diameter (the k-support ball is then
            the L2 ball), then the real ``k`` is set and the parameters are shifted inside. Sets without a
            ``k`` are not affected. ``None`` for no delay. Momentum is kept (the reference leaves this
            unspecified).
        k_switch: when the delay ends. ``"in_step"`` (default): inside step ``k_delay_steps + 1``, after its
            gradient was taken at the unshifted point. ``"on_call"``: the sets stay relaxed until
            :meth:`switch_k` is called — the paper's code calls it at the end of an epoch, between the last
            step and the next forward pass, so the next gradient is taken at the shifted point;
            ``k_delay_steps`` must then be ``None``.
        initial_shift: apply the feasibility shift to every parameter at construction (default, corrected:
            iterates are then provably feasible); ``False`` is faithful to compression-aware-SFW, which starts
            from the raw initialization (docs/sfw.md#faithful-and-corrected-behaviour).

    Raises:
        ValueError: on a group without a constraint, a constraint whose size does not match its
            parameters, or an invalid hyperparameter (the message names the group and parameter).
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 0.1,
        momentum: float = 0.9,
        momentum_convention: MomentumConvention = "sum",
        dampening: float | None = None,
        rescale: RescaleMode = "gradient",
        k_delay_steps: int | None = None,
        k_switch: KSwitch = "in_step",
        initial_shift: bool = True,
    ) -> None:
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "momentum_convention": momentum_convention,
            "dampening": dampening,
            "rescale": rescale,
            "k_delay_steps": k_delay_steps,
            "k_switch": k_switch,
        }
        # Caches keep their keys' objects alive, so an id() is never reused while cached.
        self._relaxed: dict[int, tuple[ConstraintSet, ConstraintSet]] = {}
        self._plans: dict[int, tuple[list[ConstraintSet], _Plan]] = {}
        super().__init__(params, defaults)
        if initial_shift:
            self.shift_inside()

    # ---------------------------------------------------------------------------------- param groups
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a param group after checking its constraint and hyperparameters."""
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        _validate_group(group, len(self.param_groups) - 1)
        delay = group["k_delay_steps"]
        # Whether the group's k-sets are still relaxed; checkpointed with the param groups.
        group["k_relaxed"] = group["k_switch"] == "on_call" or bool(delay)

    # ------------------------------------------------------------------------------------ interface
    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One SFW step for every param group; skipped entirely if any gradient is non-finite.

        Args:
            closure: re-evaluates the model and returns the loss (called with gradients enabled).

        Returns:
            The closure's loss, or ``None``.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for i, group in enumerate(self.param_groups):
            if group["rescale"] == "none" and not 0 <= group["lr"] <= 1:
                raise ValueError(f"SFW param group {i}: rescale='none' needs lr in [0, 1], got {group['lr']}")
        finite = self._grads_finite()
        for group in self.param_groups:
            self._step_group(group, finite)
        return loss

    @torch.no_grad()
    def switch_k(self) -> None:
        """End delayed k now: every relaxed group takes its real ``k`` and its parameters are shifted inside.

        With ``k_switch="on_call"`` call it where the delay should end; the paper's code does so at the end
        of an epoch, after the last step and before the next forward pass. Groups whose delay is over (or
        that have none) are left alone, so calling it again does nothing.
        """
        for group in self.param_groups:
            if group["k_relaxed"]:
                group["k_relaxed"] = False
                self._shift_group(group, self._current_constraints(group))

    @torch.no_grad()
    def shift_inside(self) -> None:
        """Apply the feasibility shift ``θ ← r·θ/‖θ‖_C`` (if ``‖θ‖_C > r``) with the current sets."""
        for group in self.param_groups:
            self._shift_group(group, self._current_constraints(group))

    def state_dict(self) -> dict[str, Any]:
        """The optimizer state; constraints are stored as plain configs (loadable with ``weights_only``)."""
        sd = super().state_dict()
        for packed in sd["param_groups"]:
            c = packed["constraint"]
            packed["constraint"] = (
                c.to_config() if isinstance(c, ConstraintSet) else [x.to_config() for x in c]
            )
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state saved by :meth:`state_dict`, rebuilding the constraint sets from their configs."""
        super().load_state_dict(state_dict)
        self._relaxed.clear()
        self._plans.clear()
        for i, group in enumerate(self.param_groups):
            # States saved before the switch timing existed: the in-step switch, due at step k_delay_steps.
            group.setdefault("k_switch", "in_step")
            delay = group["k_delay_steps"]
            group.setdefault("k_relaxed", bool(delay) and self._group_step(group) <= delay)
            c = group["constraint"]
            group["constraint"] = (
                constraint_from_config(c) if isinstance(c, dict) else [constraint_from_config(x) for x in c]
            )
            _validate_group(group, i)

    # ------------------------------------------------------------------------------------- internals
    def _grads_finite(self) -> Tensor | None:
        """A 0-dim boolean on the first gradient's device: every gradient is finite (``None``: no gradient).

        Non-finite gradients are zeroed in place when the flag is false, so that the masked update that
        follows reads finite values only. No host synchronisation.
        """
        by_key: dict[tuple[torch.device, torch.dtype], list[Tensor]] = {}
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    by_key.setdefault((p.grad.device, p.grad.dtype), []).append(p.grad)
        if not by_key:
            return None
        device = next(iter(by_key))[0]
        found = torch.zeros((), device=device)
        for (grad_device, _), grads in by_key.items():
            flag = torch.zeros(1, device=grad_device)
            # AMP's fused check; multiplying by 1 leaves the gradients unchanged.
            torch._amp_foreach_non_finite_check_and_unscale_(grads, flag, torch.ones(1, device=grad_device))
            found = found + flag.to(device).reshape(())
        finite = found == 0
        for grads in by_key.values():
            for grad in grads:  # a no-op on finite steps; NaN · 0 would stay NaN, hence the fill
                grad.masked_fill_(~finite.to(grad.device), 0.0)
        return finite

    def _current_constraints(self, group: dict[str, Any]) -> list[ConstraintSet]:
        """Constraints per unit, relaxed to k = k_max while the delay lasts."""
        c = group["constraint"]
        units = [c] if isinstance(c, ConstraintSet) else list(c)
        if group["k_relaxed"]:
            return [self._relax(u) if isinstance(u, KConstraintSet) else u for u in units]
        return units

    def _relax(self, c: KConstraintSet) -> ConstraintSet:
        cached = self._relaxed.get(id(c))
        if cached is None or cached[0] is not c:
            cached = (c, c.with_k(c.k_max))
            self._relaxed[id(c)] = cached
        return cached[1]

    def _group_step(self, group: dict[str, Any]) -> int:
        return self.state[group["params"][0]].get("step", 0)

    def _units(self, group: dict[str, Any]) -> list[list[Tensor]]:
        params = group["params"]
        return [list(params)] if isinstance(group["constraint"], ConstraintSet) else [[p] for p in params]

    def _plan(self, group: dict[str, Any], constraints: list[ConstraintSet]) -> _Plan:
        """Buckets of units whose sets differ only by radius (cached while the sets are the same objects)."""
        cached = self._plans.get(id(group))
        if (
            cached is not None
            and len(cached[0]) == len(constraints)
            and all(a is b for a, b in zip(cached[0], constraints, strict=True))
        ):
            return cached[1]
        plan = _Plan(constraints)
        self._plans[id(group)] = (list(constraints), plan)
        return plan

    def _step_group(self, group: dict[str, Any], finite: Tensor | None) -> None:
        params: list[Tensor] = group["params"]
        step = self._group_step(group)
        if group["k_relaxed"] and group["k_switch"] == "in_step" and step >= group["k_delay_steps"]:
            # Delayed k switches now: move the iterate into the target set before using its LMO.
            group["k_relaxed"] = False
            self._shift_group(group, self._current_constraints(group))
        directions = self._momentum(group, params, finite)
        plan = self._plan(group, self._current_constraints(group))
        units = self._units(group)
        sizes = [len(u) for u in units]
        dir_by_param = dict(zip(map(id, params), directions, strict=True))
        # Only the LMO runs per bucket (on the directions, stacked or viewed); norms, gaps, step sizes and the
        # convex combination run once over all of the group's tensors with fused (foreach) kernels.
        m_norms = _unit_norms(directions, sizes)
        radii, factors = plan.radii(m_norms)
        moving = m_norms >= ZERO_GRAD_NORM
        vertices: list[list[Tensor]] = []  # per unit, in bucket order
        for bucket, column, index in zip(
            plan.buckets, plan.radius_columns(m_norms), plan.bucket_indices(m_norms), strict=True
        ):
            m, _ = _gather_units(
                [[dir_by_param[id(p)] for p in units[i]] for i in bucket.indices], bucket.rep.shape
            )
            rows = bucket.rep.lmo_rows(m, column if column.dtype == m.dtype else column.to(m.dtype))
            # v = 0 where the direction vanishes (docs/sfw.md#the-sfw-step step 3); a selection, as the LMO of
            # 0 may be NaN.
            rows = torch.where(_column(moving[index], rows.dim()), rows, 0).unbind(0)
            vertices.extend(_split_row(row, units[i]) for i, row in zip(bucket.indices, rows, strict=True))
        by_unit = [vertices[j] for j in plan.order]
        flat_vertices = [v for unit in by_unit for v in unit]
        gaps = None
        if group["rescale"] == "gradient":
            gaps = _unit_norms(torch._foreach_sub(params, flat_vertices), sizes)
        gamma = _step_size(group["rescale"], float(group["lr"]), m_norms, gaps, radii * factors)
        if finite is not None:  # a skipped step: γ = 0 leaves every parameter exactly as it is
            gamma = gamma * finite.to(gamma.device)
        # Every tensor's γ as a 0-dim view (no host synchronisation), in its parameter's dtype.
        weights = gamma[plan.unit_index(gamma, sizes)].unbind(0)
        torch._foreach_lerp_(
            params, flat_vertices, [w.to(p.dtype) for w, p in zip(weights, params, strict=True)]
        )
        for p in params:
            self.state[p]["step"] = step + 1

    def _momentum(self, group: dict[str, Any], params: list[Tensor], finite: Tensor | None) -> list[Tensor]:
        """Update the momentum buffers; return the direction fed to the LMO for every parameter.

        On a skipped step (``finite`` false, the gradients already zeroed) the buffers are kept.
        """
        mu = group["momentum"]
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        if mu == 0:
            return grads
        damp = group["dampening"]
        if damp is None:
            damp = mu if group["momentum_convention"] == "ema" else 0.0
        bufs, buf_grads = [], []
        for p, g in zip(params, grads, strict=True):
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = g.detach().clone()
            else:
                bufs.append(state["momentum_buffer"])
                buf_grads.append(g)
        if bufs:
            # m ← μ·m + (1 − d)·g, or m ← 1·m + (1 − d)·0 on a skipped step.
            decay: float | Tensor = mu
            if finite is not None:
                like = bufs[0]
                decay = torch.full((), mu, dtype=like.dtype, device=like.device).masked_fill(~finite, 1.0)
            torch._foreach_mul_(bufs, decay)
            torch._foreach_add_(bufs, buf_grads, alpha=1 - damp)
        return [self.state[p]["momentum_buffer"] for p in params]

    def _shift_group(self, group: dict[str, Any], constraints: list[ConstraintSet]) -> None:
        units = self._units(group)
        plan = self._plan(group, constraints)
        for bucket, column in zip(plan.buckets, plan.radius_columns(group["params"][0]), strict=True):
            theta, in_place = _gather_units([units[i] for i in bucket.indices], bucket.rep.shape)
            radii = column.flatten().to(theta.dtype)
            theta.mul_(_column(bucket.rep.shift_factors(theta, radii), theta.dim()))
            if not in_place:
                _write_back([units[i] for i in bucket.indices], theta)


class _Bucket:
    """Units whose sets differ only by radius: one representative set and the units' indices."""

    def __init__(self, rep: ConstraintSet) -> None:
        self.rep = rep
        self.indices: list[int] = []
        self.index = torch.empty(0, dtype=torch.long)


class _Plan:
    """How a group's units are batched, with per-unit radii and diameter factors in unit order."""

    def __init__(self, constraints: list[ConstraintSet]) -> None:
        buckets: dict[Hashable, _Bucket] = {}
        for i, c in enumerate(constraints):
            key = c.batch_key() if c.numel <= _STACK_LIMIT else i
            buckets.setdefault(key, _Bucket(c)).indices.append(i)
        self.buckets = list(buckets.values())
        for bucket in self.buckets:
            bucket.index = torch.tensor(bucket.indices, dtype=torch.long)
        # Position of every unit in the concatenation of the buckets' rows.
        self.order = torch.argsort(torch.cat([b.index for b in self.buckets])).tolist()
        self._radii = [c.radius for c in constraints]
        self._factors = [c.diameter_factor() for c in constraints]
        self._tensors: dict[
            tuple[torch.device, torch.dtype], tuple[Tensor, Tensor, list[Tensor], list[Tensor]]
        ] = {}
        self._unit_index: dict[tuple[torch.device, tuple[int, ...]], Tensor] = {}

    def radii(self, like: Tensor) -> tuple[Tensor, Tensor]:
        """Radii and diameter factors ``D/r`` of all units, each of shape ``(units,)``, like ``like``."""
        radii, factors, _, _ = self._cached(like)
        return radii, factors

    def unit_index(self, like: Tensor, sizes: list[int]) -> Tensor:
        """The unit of every tensor of the group (``sizes[i]`` tensors per unit), on ``like``'s device."""
        key = (like.device, tuple(sizes))
        if key not in self._unit_index:
            index = [unit for unit, size in enumerate(sizes) for _ in range(size)]
            self._unit_index[key] = torch.tensor(index, dtype=torch.long, device=like.device)
        return self._unit_index[key]

    def radius_columns(self, like: Tensor) -> list[Tensor]:
        """Every bucket's radii as a column broadcastable against its batch of directions."""
        return self._cached(like)[2]

    def bucket_indices(self, like: Tensor) -> list[Tensor]:
        """Every bucket's unit indices, on ``like``'s device."""
        return self._cached(like)[3]

    def _cached(self, like: Tensor) -> tuple[Tensor, Tensor, list[Tensor], list[Tensor]]:
        key = (like.device, like.dtype)
        if key not in self._tensors:
            radii, factors = (
                torch.tensor(v, dtype=like.dtype, device=like.device) for v in (self._radii, self._factors)
            )
            indices = [b.index.to(like.device) for b in self.buckets]
            columns = [
                _column(radii[index], len(b.rep.shape) + 1)
                for b, index in zip(self.buckets, indices, strict=True)
            ]
            self._tensors[key] = (radii, factors, columns, indices)
        return self._tensors[key]


def _gather_units(units: list[list[Tensor]], shape: tuple[int, ...]) -> tuple[Tensor, bool]:
    """Stack units into a batch of the set's shape; ``True`` if the batch is a view of the one tensor."""
    if len(units) == 1 and len(units[0]) == 1 and units[0][0].is_contiguous():
        return units[0][0].view(1, *shape), True
    rows = [
        u[0].reshape(shape) if len(u) == 1 else torch.cat([t.reshape(-1) for t in u]).view(shape)
        for u in units
    ]
    return torch.stack(rows), False


def _write_back(units: list[list[Tensor]], theta: Tensor) -> None:
    targets, sources = [], []
    for unit, row in zip(units, theta.unbind(0), strict=True):
        if len(unit) == 1:
            targets.append(unit[0])
            sources.append(row.view_as(unit[0]))
            continue
        for p, chunk in zip(unit, row.reshape(-1).split([p.numel() for p in unit]), strict=True):
            targets.append(p)
            sources.append(chunk.view_as(p))
    torch._foreach_copy_(targets, sources)


def _column(x: Tensor, ndim: int) -> Tensor:
    """A vector as a column broadcastable against a batch of ``ndim`` dimensions."""
    return x.view(-1, *([1] * (ndim - 1)))


def _split_row(row: Tensor, unit: list[Tensor]) -> list[Tensor]:
    """One LMO output row shaped like the unit's parameters (views, unless a stacked bucket mixed dtypes)."""
    chunks = [row] if len(unit) == 1 else row.reshape(-1).split([p.numel() for p in unit])
    views = [chunk.view_as(p) for p, chunk in zip(unit, chunks, strict=True)]
    return [v if v.dtype == p.dtype else v.to(p.dtype) for p, v in zip(unit, views, strict=True)]


def _unit_norms(tensors: list[Tensor], sizes: list[int]) -> Tensor:
    """L2 norm of every unit (``sizes[i]`` consecutive tensors), shape ``(units,)``, from one fused norm."""
    norms = torch.stack(torch._foreach_norm(tensors))
    if len(tensors) == len(sizes):
        return norms
    return torch.stack([n.square().sum().sqrt() for n in norms.split(sizes)])


def _step_size(rescale: str, lr: float, m_norm: Tensor, gap: Tensor | None, diameters: Tensor) -> Tensor:
    """``γ = clamp(lr·φ, 0, 1)`` per unit (docs/sfw.md step 4); ``gap = ‖θ − v‖`` for ``"gradient"``."""
    if rescale == "gradient":
        assert gap is not None
        phi = m_norm / gap.clamp_min(torch.finfo(gap.dtype).tiny)
        return torch.where(gap > 0, (lr * phi).clamp(0, 1), 0.0)
    if rescale == "fast_gradient":
        phi = m_norm / (diameters / 2)
    elif rescale == "diameter":
        phi = 1.0 / diameters
    else:
        phi = torch.ones_like(diameters)
    return (lr * phi).clamp(0, 1)


def _validate_group(group: dict[str, Any], index: int) -> None:
    where = f"SFW param group {index}"
    c = group.get("constraint")
    params = group["params"]
    if c is None:
        raise ValueError(f"{where}: no 'constraint' (a ConstraintSet, or a list with one per parameter)")
    if isinstance(c, ConstraintSet):
        total = sum(p.numel() for p in params)
        if total != c.numel:
            raise ValueError(f"{where}: global {c!r} has {c.numel} entries but the params have {total}")
        units = [c]
    else:
        units = list(c)
        if len(units) != len(params) or not all(isinstance(u, ConstraintSet) for u in units):
            raise ValueError(
                f"{where}: 'constraint' must be a ConstraintSet or a list of {len(params)} of them"
            )
        for j, (u, p) in enumerate(zip(units, params, strict=True)):
            if u.numel != p.numel():
                raise ValueError(
                    f"{where}, parameter {j} of shape {tuple(p.shape)}: {type(u).__name__} of shape {u.shape}"
                )
        group["constraint"] = units
    if group["rescale"] not in _RESCALE_MODES:
        raise ValueError(f"{where}: rescale must be one of {_RESCALE_MODES}, got {group['rescale']!r}")
    if group["momentum_convention"] not in _CONVENTIONS:
        raise ValueError(f"{where}: momentum_convention must be one of {_CONVENTIONS}")
    if not 0 <= group["momentum"] < 1:
        raise ValueError(f"{where}: momentum must lie in [0, 1), got {group['momentum']}")
    if group["lr"] < 0 or (group["rescale"] == "none" and group["lr"] > 1):
        raise ValueError(f"{where}: lr={group['lr']} invalid for rescale={group['rescale']!r}")
    if group["k_switch"] not in _K_SWITCHES:
        raise ValueError(f"{where}: k_switch must be one of {_K_SWITCHES}, got {group['k_switch']!r}")
    delay = group["k_delay_steps"]
    if delay is not None and group["k_switch"] == "on_call":
        raise ValueError(f"{where}: k_switch='on_call' ends the delay at switch_k(); give no k_delay_steps")
    if delay is not None:
        if delay < 0:
            raise ValueError(f"{where}: k_delay_steps must be ≥ 0, got {delay}")

"""Constraints for a whole model, as Zimmer, Spiegel, Pokutta (arXiv:2205.11921) assign them.

Spec ``sfw.md`` §2.4 (radius and k) and §2.5 (which set goes on which tensor). Every trainable tensor is
constrained, BatchNorm γ/β and biases included, each with its own set (local mode) or, in global mode,
one set per tensor family over the flattened concatenation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

from torch import Tensor, nn

from slimtrain.fw.base import CONSTRAINT_SETS, ConstraintSet, VectorKConstraintSet, resolve_k
from slimtrain.fw.ksupport import GroupKSupportNormBall
from slimtrain.fw.lp_balls import LpBall
from slimtrain.fw.radius import RadiusLookup, estimate_init_norms, local_init_norms
from slimtrain.fw.spectral import NuclearNormBall, SpectralKSparsePolytope, SpectralKSupportNormBall

__all__ = ["SETS_BY_MODE", "build_constraints", "miao_k"]

Mode = Literal["unstructured", "filter", "lowrank"]
#: The registered constraint sets (names in :data:`~slimtrain.fw.base.CONSTRAINT_SETS`) each mode puts on its
#: structured tensors, its default first; the other tensors of the structured modes get an L2 ``lp_ball``.
SETS_BY_MODE: dict[str, tuple[str, ...]] = {
    "unstructured": ("k_support", "k_sparse", "lp_ball"),
    "filter": ("group_k_support",),
    "lowrank": ("spectral_k_support", "spectral_k_sparse", "nuclear"),
}

KSpec = float | Callable[[int], int]


def miao_k(n: int, k_abs: int = 10, k_frac: float = 0.05) -> int:
    """Miao et al.'s rule ``K = min(max(K_abs, ⌊K_frac·n⌋), n)`` (pass it as ``k``)."""
    return min(max(k_abs, math.floor(k_frac * n)), n)


def build_constraints(
    model: nn.Module,
    mode: Mode = "unstructured",
    *,
    constraint: str | None = None,
    k: KSpec = 0.3,
    tau: float = 10.0,
    radius: float | None = None,
    diameter: float | None = None,
    p: float = 2.0,
    global_mode: bool = False,
    n_draws: int = 100,
    seed: int = 0,
    radius_lookup: RadiusLookup = "per_tensor",
    spectral_solver: Literal["exact", "power"] = "exact",
    group_select: Literal["topk", "kthvalue"] = "topk",
) -> list[dict[str, Any]]:
    """Param groups with constraints for :class:`~slimtrain.fw.SFW`.

    - ``"unstructured"``: the set ``constraint`` (``"k_support"`` default, ``"k_sparse"``, ``"lp_ball"``)
      on every tensor.
    - ``"filter"``: ``"group_k_support"`` on conv weights (groups = output filters); an L2 ball elsewhere.
    - ``"lowrank"``: ``"spectral_k_support"`` (default), ``"spectral_k_sparse"`` or ``"nuclear"`` on conv
      weights as ``mat(W)`` of shape ``(c_out, c_in·kh·kw)``; an L2 ball elsewhere, Linear weights included.

    Radius: by default ``D = 2·τ·E‖θ_init‖`` (so ``r = τ·E‖θ_init‖`` for the balls and ``τ·E‖θ_init‖/√k``
    for the K-sparse polytopes), with ``E‖θ_init‖`` from :func:`estimate_init_norms` (on a copy; the model
    is not touched). In local mode a mean of 0 becomes 1.0. ``radius`` or ``diameter`` set every radius
    or diameter directly instead. Global mode: one set over all tensors of each family (conv weights,
    everything else in the structured modes), ``D = 2τ·sqrt(Σ_l E‖θ_l‖²)`` without replacing zeros
    (as the reference code; not available for spectral sets).

    Args:
        model: the model whose trainable parameters are constrained.
        mode: ``"unstructured"``, ``"filter"`` or ``"lowrank"``.
        constraint: the set name (see above); ``None`` for the mode's default.
        k: a fraction in ``(0, 1]`` or an absolute count ``> 1`` (see :func:`resolve_k`), or a function
            ``n ↦ k`` such as :func:`miao_k`. ``n`` is the number of entries, of filters, or
            ``min(c_out, c_in·kh·kw)``.
        tau: τ, the multiple of the expected initial norm (reference ``lmo_value``; Miao ``--tau``).
        radius: the radius of every set (mode ``radius``).
        diameter: the L2 diameter of every set (mode ``diameter``).
        p: the order of ``"lp_ball"``.
        global_mode: one set per tensor family instead of one per tensor.
        n_draws: re-initializations for the norm estimate.
        seed: seed of the norm estimate and of the power-iteration solver.
        radius_lookup: ``"per_tensor"`` (default) or ``"by_shape"`` (faithful to the reference code's
            shape-keyed dict, spec §5).
        spectral_solver: ``"exact"`` (default) or ``"power"`` for the spectral sets.
        group_select: ``"topk"`` (default) or ``"kthvalue"`` (faithful) for the group k-support set.

    Returns:
        A list of param groups ``{"params": [...], "constraint": ..., "names": [...]}`` (empty groups
        omitted): ``constraint`` is a list with one set per parameter, or one set in global mode.

    Raises:
        ValueError: on an unknown mode or set, both ``radius`` and ``diameter`` given, or global mode with a
            spectral set.
    """
    if mode not in SETS_BY_MODE:
        raise ValueError(f"build_constraints: unknown mode {mode!r}; use one of {sorted(SETS_BY_MODE)}")
    set_name = constraint or SETS_BY_MODE[mode][0]
    if set_name not in SETS_BY_MODE[mode]:
        raise ValueError(
            f"build_constraints: constraint {set_name!r} does not fit mode {mode!r}; "
            f"use one of {', '.join(SETS_BY_MODE[mode])}"
        )
    if radius is not None and diameter is not None:
        raise ValueError("build_constraints: give radius or diameter, not both")
    if global_mode and mode == "lowrank":
        raise ValueError("build_constraints: global mode is not defined for spectral sets")

    params = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if not params:
        raise ValueError("build_constraints: the model has no trainable parameters")
    structured = _structured_weights(model) if mode != "unstructured" else set()
    families: dict[str, list[tuple[str, Tensor]]] = {"structured": [], "other": []}
    for name, param in params:
        families["structured" if name in structured or mode == "unstructured" else "other"].append(
            (name, param)
        )

    norms: dict[str, float] = {}
    if radius is None and diameter is None:
        norms = estimate_init_norms(model, n_draws=n_draws, seed=seed)

    def make(
        shape: tuple[int, ...], family: str, group_sizes: list[int] | None, norm: float
    ) -> ConstraintSet:
        kind, order = (set_name, p) if family == "structured" else ("lp_ball", 2.0)
        c = _make_set(kind, shape, group_sizes, k, order, spectral_solver, seed, group_select)
        if radius is not None:
            return c.with_radius(radius)
        target_d = diameter if diameter is not None else 2.0 * tau * norm
        return c.with_radius(target_d / c.diameter_factor())

    groups: list[dict[str, Any]] = []
    if global_mode:
        for family, members in families.items():
            if not members:
                continue
            sizes = None
            if family == "structured" and mode == "filter":
                sizes = [math.prod(p.shape[1:]) for _, p in members for _ in range(p.shape[0])]
            n = sum(p.numel() for _, p in members)
            norm = math.sqrt(sum(norms.get(name, 0.0) ** 2 for name, _ in members))
            c = make((n,), family, sizes, norm)
            groups.append(
                {"params": [p for _, p in members], "constraint": c, "names": [n for n, _ in members]}
            )
        return groups

    local = local_init_norms(model, norms, radius_lookup) if norms else {}
    for family, members in families.items():
        if not members:
            continue
        sets = []
        for name, param in members:
            shape = tuple(param.shape)
            sizes = [math.prod(shape[1:])] * shape[0] if family == "structured" and mode == "filter" else None
            sets.append(make(shape, family, sizes, local.get(name, 0.0)))
        groups.append(
            {"params": [p for _, p in members], "constraint": sets, "names": [n for n, _ in members]}
        )
    return groups


def _structured_weights(model: nn.Module) -> set[str]:
    """Names of the weights of (non-transposed) conv layers."""
    names = set()
    for module_name, module in model.named_modules():
        if isinstance(module, nn.modules.conv._ConvNd) and not module.transposed:
            names.add(f"{module_name}.weight" if module_name else "weight")
    return names


def _resolve(k: KSpec, n: int) -> int:
    return max(1, min(int(k(n)), n)) if callable(k) else resolve_k(k, n)


def _make_set(
    kind: str,
    shape: tuple[int, ...],
    group_sizes: list[int] | None,
    k: KSpec,
    p: float,
    solver: Literal["exact", "power"],
    seed: int,
    group_select: Literal["topk", "kthvalue"],
) -> ConstraintSet:
    """The registered set ``kind`` for a tensor of ``shape``, with radius 1 (rescaled by the caller).

    The class is looked up in :data:`~slimtrain.fw.base.CONSTRAINT_SETS`; its family says how the tensor's
    shape, ``k`` and the options become constructor arguments (a vector of ``n`` entries, groups, or the
    matrix ``(shape[0], n/shape[0])``).
    """
    cls = CONSTRAINT_SETS.get(kind)
    n = math.prod(shape)
    if issubclass(cls, LpBall):
        return cls(n, 1.0, p=p)
    if issubclass(cls, GroupKSupportNormBall):
        if group_sizes is None:
            raise ValueError(f"build_constraints: constraint {kind!r} needs groups (mode 'filter')")
        return cls(group_sizes, _resolve(k, len(group_sizes)), 1.0, select=group_select)
    if issubclass(cls, VectorKConstraintSet):
        return cls(n, _resolve(k, n), 1.0)
    rows, cols = shape[0], n // shape[0]
    if issubclass(cls, NuclearNormBall):
        return cls(rows, cols, 1.0, solver=solver, seed=seed)
    if issubclass(cls, SpectralKSupportNormBall | SpectralKSparsePolytope):
        return cls(rows, cols, _resolve(k, min(rows, cols)), 1.0, solver=solver, seed=seed)
    raise ValueError(f"build_constraints: no rule turns a tensor into the constraint set {cls.__name__}")

"""Constraints for a whole model, as Zimmer, Spiegel, Pokutta (arXiv:2205.11921) assign them.

Every trainable tensor is constrained, BatchNorm γ/β and biases included, each with its own set (local mode)
or, in global mode, one set per tensor family over the flattened concatenation. The options live in one
frozen :class:`ConstraintsConfig`; see ``docs/sfw.md`` ("Building the sets for a model").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from torch import Tensor, nn

from slimtrain._config import is_int, is_real, with_options
from slimtrain._materialized import refuse_sparse_gradients, refuse_unmaterialized
from slimtrain.errors import BadInputError
from slimtrain.fw.base import CONSTRAINT_SETS, ConstraintSet, VectorKConstraintSet, resolve_k
from slimtrain.fw.ksupport import GroupKSupportNormBall
from slimtrain.fw.lp_balls import LpBall
from slimtrain.fw.radius import RadiusLookup, estimate_init_norms, local_init_norms, reference_init_norms
from slimtrain.fw.spectral import NuclearNormBall, SpectralKSparsePolytope, SpectralKSupportNormBall

__all__ = ["SETS_BY_MODE", "ConstraintsConfig", "build_constraints", "miao_k"]

Mode = Literal["unstructured", "filter", "lowrank"]
#: The registered constraint sets (names in :data:`~slimtrain.fw.base.CONSTRAINT_SETS`) each mode puts on its
#: structured tensors, its default first; the other tensors of the structured modes get an L2 ``lp_ball``.
SETS_BY_MODE: dict[str, tuple[str, ...]] = {
    "unstructured": ("k_support", "k_sparse", "lp_ball"),
    "filter": ("group_k_support",),
    "lowrank": ("spectral_k_support", "spectral_k_sparse", "nuclear"),
}

KSpec = float | Callable[[int], int]
#: Per-tensor radii: a mapping from parameter name to radius, or a function ``name ↦ radius`` (``None``: the
#: default rule for that tensor).
Radii = Mapping[str, float] | Callable[[str], float | None]


def miao_k(n: int, k_abs: int = 10, k_frac: float = 0.05) -> int:
    """Miao et al.'s rule ``K = min(max(K_abs, ⌊K_frac·n⌋), n)`` (pass it as ``k``)."""
    return min(max(k_abs, math.floor(k_frac * n)), n)


@dataclass(frozen=True)
class ConstraintsConfig:
    """Every option of :func:`build_constraints`, validated when the object is made.

    Radius: by default the L2 diameter of each set is ``D = 2·τ·E‖θ_init‖`` (so ``r = τ·E‖θ_init‖`` for the
    balls and ``τ·E‖θ_init‖/√k`` for the K-sparse polytopes), with ``E‖θ_init‖`` from
    :func:`~slimtrain.fw.estimate_init_norms` (on a copy; the model is not touched). In local mode a mean
    of 0 becomes 1.0. ``radius`` or ``diameter`` set every radius or diameter directly instead. Global mode:
    one set over all tensors of each family (conv weights, everything else in the structured modes),
    ``D = 2τ·sqrt(Σ_l E‖θ_l‖²)`` without replacing zeros (as the reference code). ``radii`` sets the
    radius of chosen tensors (local mode), e.g. those of a reference run; the others follow the rule above.

    Attributes:
        mode: ``"unstructured"``: the set ``constraint`` on every tensor. ``"filter"``: ``"group_k_support"``
            on conv weights (groups = output filters), an L2 ball elsewhere. ``"lowrank"``: a spectral set on
            conv weights as ``mat(W)`` of shape ``(c_out, c_in·kh·kw)``, an L2 ball elsewhere (Linear
            weights included).
        constraint: the set on the mode's structured tensors, one of :data:`SETS_BY_MODE` ``[mode]``
            (``"k_support"``, ``"k_sparse"``, ``"lp_ball"``; ``"group_k_support"``; ``"spectral_k_support"``,
            ``"spectral_k_sparse"``, ``"nuclear"``); ``None`` for the mode's default (the first).
        k: a fraction in ``(0, 1]`` or an absolute count ``> 1`` (see :func:`~slimtrain.fw.resolve_k`), or
            a function ``n ↦ k`` such as :func:`miao_k`. ``n`` is the number of entries, of filters, or
            ``min(c_out, c_in·kh·kw)``.
        tau: τ > 0, the multiple of the expected initial norm (reference ``lmo_value``; Miao ``--tau``).
        radius: the radius of every set, instead of τ (not with ``diameter``).
        diameter: the L2 diameter of every set, instead of τ (not with ``radius``).
        p: the order ``p ≥ 1`` (``math.inf`` allowed) of ``"lp_ball"``.
        global_mode: one set per tensor family instead of one per tensor (not for mode ``"lowrank"``).
        radii: per-tensor radii (local mode): a mapping ``{parameter name: radius}`` (every name must be a
            trainable parameter of the model) or a function ``name ↦ radius or None``; tensors without one
            follow the τ / ``radius`` / ``diameter`` rule. Takes precedence over that rule.
        radius_draw: how ``E‖θ_init‖`` is estimated: ``"seeded"`` (default: on a deep copy, in a forked RNG
            seeded with ``seed``; the model and the global RNG are untouched) or ``"reference"`` (faithful
            to compression-aware-SFW: on the live model from the global RNG, one ``n_draws`` loop per
            tensor, which re-randomizes the model; :func:`~slimtrain.fw.radius.reference_init_norms`).
        n_draws: re-initializations (≥ 1) for the estimate of ``E‖θ_init‖``.
        seed: seed of the norm estimate and of the power-iteration solver.
        radius_lookup: ``"per_tensor"`` (default) or ``"by_shape"`` (faithful to the reference code, which
            keys the initial norms by tensor shape, so same-shape tensors share one radius).
        spectral_solver: ``"exact"`` (default) or ``"power"`` (the reference's randomized block power
            method) for the spectral sets.
        group_select: ``"topk"`` (default: exactly k filters) or ``"kthvalue"`` (faithful: ties can select
            more than k) for the group k-support set.

    Raises:
        ValueError: a field has a wrong value or does not fit the others; the message names the field.
    """

    mode: Mode = "unstructured"
    constraint: str | None = None
    k: KSpec = 0.3
    tau: float = 10.0
    radius: float | None = None
    diameter: float | None = None
    p: float = 2.0
    global_mode: bool = False
    radii: Radii | None = None
    radius_draw: Literal["seeded", "reference"] = "seeded"
    n_draws: int = 100
    seed: int = 0
    radius_lookup: RadiusLookup = "per_tensor"
    spectral_solver: Literal["exact", "power"] = "exact"
    group_select: Literal["topk", "kthvalue"] = "topk"

    def __post_init__(self) -> None:
        def bad(field: str, why: str) -> ValueError:
            return ValueError(f"ConstraintsConfig.{field}={getattr(self, field)!r}: {why}")

        if not isinstance(self.mode, str) or self.mode not in SETS_BY_MODE:
            raise bad("mode", f"unknown mode; use one of {', '.join(SETS_BY_MODE)}")
        if self.constraint is not None and self.constraint not in SETS_BY_MODE[self.mode]:
            raise bad(
                "constraint",
                f"the set does not fit mode {self.mode!r}; use one of {', '.join(SETS_BY_MODE[self.mode])}",
            )
        if not callable(self.k) and not (is_real(self.k) and 0 < self.k < math.inf):
            raise bad("k", "must be a fraction in (0, 1], a count > 1 or a function n ↦ k")
        if not (is_real(self.tau) and 0 < self.tau < math.inf):
            raise bad("tau", "must be positive and finite")
        for field in ("radius", "diameter"):
            value = getattr(self, field)
            if value is not None and not (is_real(value) and 0 < value < math.inf):
                raise bad(field, "must be None or positive and finite")
        if self.radius is not None and self.diameter is not None:
            raise ValueError(
                f"ConstraintsConfig.radius={self.radius!r}, ConstraintsConfig.diameter={self.diameter!r}: "
                "give radius or diameter, not both"
            )
        if not (is_real(self.p) and self.p >= 1):
            raise bad("p", "must be ≥ 1")
        if not isinstance(self.global_mode, bool):
            raise bad("global_mode", "must be a bool")
        if self.global_mode and self.mode == "lowrank":
            raise bad("global_mode", "global mode is not defined for the spectral sets of mode 'lowrank'")
        if self.radii is not None:
            if self.global_mode:
                raise bad("radii", "per-tensor radii need local mode (global_mode=False)")
            if isinstance(self.radii, Mapping):
                wrong = [n for n, r in self.radii.items() if not (is_real(r) and 0 < r < math.inf)]
                if wrong or not all(isinstance(n, str) for n in self.radii):
                    raise bad("radii", f"needs parameter names mapped to positive radii (not: {wrong})")
            elif not callable(self.radii):
                raise bad("radii", "must be a mapping {parameter name: radius} or a function name ↦ radius")
        if not (is_int(self.n_draws) and self.n_draws >= 1):
            raise bad("n_draws", "must be an integer ≥ 1")
        if not is_int(self.seed):
            raise bad("seed", "must be an integer")
        for field, allowed in (
            ("radius_lookup", ("per_tensor", "by_shape")),
            ("radius_draw", ("seeded", "reference")),
            ("spectral_solver", ("exact", "power")),
            ("group_select", ("topk", "kthvalue")),
        ):
            if getattr(self, field) not in allowed:
                raise bad(field, f"use one of {', '.join(allowed)}")

    @property
    def set_name(self) -> str:
        """The set on the structured tensors: ``constraint``, or the mode's default."""
        return self.constraint or SETS_BY_MODE[self.mode][0]


def build_constraints(
    model: nn.Module,
    config: ConstraintsConfig | Mode | None = None,
    **options: Any,
) -> list[dict[str, Any]]:
    """Param groups with constraints for :class:`~slimtrain.fw.SFW`.

    ``build_constraints(model, ConstraintsConfig(mode="filter", k=0.3))``,
    ``build_constraints(model, "filter", k=0.3)`` and ``build_constraints(model, mode="filter", k=0.3)``
    are the same call; see :class:`ConstraintsConfig` for the options, their defaults and the radius rule.

    Args:
        model: the model whose trainable parameters are constrained.
        config: the options; or a mode name, short for ``ConstraintsConfig(mode=...)``; ``None`` for the
            defaults.
        **options: fields of :class:`ConstraintsConfig` that replace those of ``config``.

    Returns:
        A list of param groups ``{"params": [...], "constraint": ..., "names": [...]}`` (empty groups
        omitted): ``constraint`` is a list with one set per parameter, or one set in global mode.

    Raises:
        TypeError: an option that is not a field of :class:`ConstraintsConfig` (named, with the valid ones),
            or the mode given twice.
        ValueError: an invalid option (naming the field).
        BadInputError: a model without trainable parameters (also a ``ValueError``).
        UnsupportedModelError: a parameter or buffer without values (``meta`` device, lazy module), or a
            trained embedding with ``sparse=True`` (SFW's step needs dense gradients); the module is named.
        BadInputError: ``radii`` names parameters the model does not train (all of them named); also a
            ``ValueError``.
    """
    if isinstance(config, str):
        if "mode" in options:
            raise TypeError("build_constraints() got the mode twice: as its second argument and as mode=")
        config, options = None, {"mode": config, **options}
    cfg = with_options(ConstraintsConfig, config, options, "build_constraints")
    mode, set_name = cfg.mode, cfg.set_name

    refuse_unmaterialized(model, "build_constraints")
    params = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if not params:
        raise BadInputError(
            f"build_constraints: {type(model).__qualname__} has no trainable parameters (none, or all with "
            "requires_grad=False): SFW has nothing to constrain"
        )
    refuse_sparse_gradients(model, "SFW")
    structured = _structured_weights(model) if mode != "unstructured" else set()
    families: dict[str, list[tuple[str, Tensor]]] = {"structured": [], "other": []}
    for name, param in params:
        families["structured" if name in structured or mode == "unstructured" else "other"].append(
            (name, param)
        )

    explicit = _explicit_radii(cfg.radii, [name for name, _ in params])
    norms: dict[str, float] = {}
    if cfg.radius is None and cfg.diameter is None and len(explicit) < len(params):
        if cfg.radius_draw == "reference":
            norms = reference_init_norms(model, n_draws=cfg.n_draws, first=structured)
        else:
            norms = estimate_init_norms(model, n_draws=cfg.n_draws, seed=cfg.seed)

    def make(
        shape: tuple[int, ...], family: str, group_sizes: list[int] | None, norm: float
    ) -> ConstraintSet:
        kind, order = (set_name, cfg.p) if family == "structured" else ("lp_ball", 2.0)
        c = _make_set(kind, shape, group_sizes, cfg.k, order, cfg.spectral_solver, cfg.seed, cfg.group_select)
        if cfg.radius is not None:
            return c.with_radius(cfg.radius)
        target_d = cfg.diameter if cfg.diameter is not None else 2.0 * cfg.tau * norm
        return c.with_radius(target_d / c.diameter_factor())

    groups: list[dict[str, Any]] = []
    if cfg.global_mode:
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

    local = local_init_norms(model, norms, cfg.radius_lookup) if norms else {}
    for family, members in families.items():
        if not members:
            continue
        sets = []
        for name, param in members:
            shape = tuple(param.shape)
            sizes = [math.prod(shape[1:])] * shape[0] if family == "structured" and mode == "filter" else None
            c = make(shape, family, sizes, local.get(name, 0.0))
            sets.append(c.with_radius(explicit[name]) if name in explicit else c)
        groups.append(
            {"params": [p for _, p in members], "constraint": sets, "names": [n for n, _ in members]}
        )
    return groups


def _explicit_radii(radii: Radii | None, names: list[str]) -> dict[str, float]:
    """The radii ``radii`` gives, by parameter name.

    Raises:
        BadInputError: a mapping names parameters that are not trainable parameters of the model.
        ValueError: a function returns a radius that is not positive and finite.
    """
    if radii is None:
        return {}
    if isinstance(radii, Mapping):
        unknown = sorted(set(radii) - set(names))
        if unknown:
            raise BadInputError(
                f"build_constraints: radii names {', '.join(map(repr, unknown))}, not trainable parameters "
                f"of the model (its parameters: {', '.join(names[:8])}{', ...' if len(names) > 8 else ''})"
            )
        return {name: float(radii[name]) for name in names if name in radii}
    given = {name: radii(name) for name in names}
    bad = {n: r for n, r in given.items() if r is not None and not (is_real(r) and 0 < r < math.inf)}
    if bad:
        raise ValueError(
            f"build_constraints: radii gave invalid radii {bad}; a radius is positive and finite"
        )
    return {name: float(r) for name, r in given.items() if r is not None}


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

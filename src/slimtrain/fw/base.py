"""Common interface of the compact convex sets used by Stochastic Frank-Wolfe.

Every set is a norm ball ``C = {x : ‖x‖_C ≤ r}`` with a linear minimization oracle (LMO)
``v = argmin_{u ∈ C} ⟨g, u⟩``, its gauge ``‖·‖_C``, its radius ``r`` and its L2 diameter ``D``
(Zimmer, Spiegel, Pokutta, arXiv:2205.11921; docs/sfw.md#constraint-sets-and-their-lmos).

The arithmetic of every set is written for a *batch* of inputs of the set's working ``shape`` with one
radius per batch row, so that the optimizer can stack all tensors that share a set type and size and run
one LMO for all of them instead of a chain of small kernels per tensor.

Every concrete set class with a ``name`` is registered under it in :data:`CONSTRAINT_SETS` (a
:class:`slimtrain.registry.Registry`) when the class is defined, so a third-party set becomes loadable by
:func:`constraint_from_config` (and thus from checkpoints) as soon as its module is imported.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Hashable
from typing import Any, ClassVar

import torch
from torch import Tensor

from slimtrain.errors import BadInputError
from slimtrain.registry import Registry

__all__ = [
    "CONSTRAINT_SETS",
    "ConstraintSet",
    "constraint_from_config",
    "resolve_k",
    "top_magnitude_indices",
]

#: Set name (``ConstraintSet.name``, the ``type`` of :meth:`ConstraintSet.to_config`) → set class.
CONSTRAINT_SETS: Registry[type[ConstraintSet]] = Registry("constraint set")

# Below this gradient norm the LMO direction is undefined; the LMO then returns v = 0
# (docs/sfw.md#the-sfw-step step 3).
ZERO_GRAD_NORM = 1e-10


def resolve_k(k: float, n: int) -> int:
    """Turn a fraction or an absolute count into the integer ``k`` of a set (docs/sfw.md).

    Args:
        k: a fraction of ``n`` when ``0 < k ≤ 1`` (``k = max(1, min(⌊k·n⌋, n))``), an absolute count
            when ``k > 1`` (``k = min(⌊k⌋, n)``).
        n: the number of entries, filters or singular values the set selects from.

    Returns:
        The integer ``k`` with ``1 ≤ k ≤ n``.

    Raises:
        ValueError: if ``k`` or ``n`` is not positive.
    """
    if n < 1:
        raise ValueError(f"cannot select from n={n} elements")
    if not k > 0:
        raise ValueError(f"k must be positive (a fraction in (0, 1] or a count > 1), got {k}")
    if k <= 1:
        return max(1, min(math.floor(k * n), n))
    return min(math.floor(k), n)


class ConstraintSet(ABC):
    """A norm ball with its LMO, gauge, radius and diameter.

    Subclasses implement the batched primitives :meth:`lmo_batch` and :meth:`gauge_batch` on inputs of
    shape ``(b, *self.shape)``; the single-tensor methods accept any tensor with ``self.numel`` entries
    and return results of the input's shape.

    Attributes:
        shape: the working shape of the set (a vector ``(n,)`` or a matrix ``(rows, cols)``).
        radius: the norm radius ``r``.
    """

    name: ClassVar[str]
    shape: tuple[int, ...]
    radius: float

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            CONSTRAINT_SETS.register(cls.name, cls)

    def __init__(self, shape: tuple[int, ...], radius: float) -> None:
        if not radius > 0 or not math.isfinite(radius):
            raise ValueError(f"{type(self).__name__}: radius must be positive and finite, got {radius}")
        self.shape = tuple(int(s) for s in shape)
        self.radius = float(radius)

    # ----------------------------------------------------------------- to be implemented per family
    @abstractmethod
    def lmo_rows(self, grads: Tensor, radii: Tensor) -> Tensor:
        """LMO for a batch without the zero-gradient guard of :meth:`lmo_batch`.

        Args:
            grads: shape ``(b, *self.shape)``.
            radii: radii as a column broadcastable against ``grads`` (shape ``(b, 1, …)``); a row with
                radius 0 gets ``v = 0``.

        Returns:
            The minimizers, shape ``(b, *self.shape)``: a new tensor, never ``grads`` or a view of it
            (the optimizer writes into it).
        """

    @abstractmethod
    def gauge_batch(self, x: Tensor) -> Tensor:
        """Gauge (the norm ``‖·‖_C`` of the unit ball) of each row of ``x`` (shape ``(b, *self.shape)``)."""

    @abstractmethod
    def diameter_factor(self) -> float:
        """The ratio ``D / r`` of the L2 diameter to the radius."""

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """The constructor arguments (plain Python values) that rebuild this set."""

    # ----------------------------------------------------------------------------- derived behaviour
    def lmo_batch(self, grads: Tensor, radii: Tensor) -> Tensor:
        """LMO for a batch: ``v_b = argmin_{‖u‖_C ≤ radii_b} ⟨grads_b, u⟩``.

        Args:
            grads: shape ``(b, *self.shape)``.
            radii: shape ``(b,)``, one radius per row.

        Returns:
            The minimizers, shape ``(b, *self.shape)``; rows whose gradient norm is below 1e-10 are 0.
        """
        norms = torch.linalg.vector_norm(grads.flatten(1), dim=1)
        return self.lmo_rows(grads, active_radii(norms, radii, grads.dim()))

    @property
    def numel(self) -> int:
        """The number of entries of an element of the set."""
        return math.prod(self.shape)

    @property
    def diameter(self) -> float:
        """The L2 (Frobenius) diameter ``D`` of the set."""
        return self.radius * self.diameter_factor()

    def batch_key(self) -> Hashable:
        """Sets with equal keys differ at most by radius, so their LMOs can run as one batch."""
        cfg = self.config()
        cfg.pop("radius")
        return (type(self), tuple(sorted((k, _hashable(v)) for k, v in cfg.items())))

    def to_config(self) -> dict[str, Any]:
        """A serializable description, rebuilt by :func:`constraint_from_config`."""
        return {"type": self.name, **self.config()}

    def with_radius(self, radius: float) -> ConstraintSet:
        """The same set with another radius."""
        return type(self)(**{**self.config(), "radius": radius})

    def lmo(self, grad: Tensor) -> Tensor:
        """``v = argmin_{u ∈ C} ⟨grad, u⟩``, returned in the shape of ``grad``.

        Raises:
            ValueError: if ``grad`` does not have ``self.numel`` entries.
        """
        g = self._as_batch(grad)
        return self.lmo_batch(g, g.new_full((1,), self.radius))[0].reshape(grad.shape)

    def gauge(self, x: Tensor) -> Tensor:
        """The norm ``‖x‖_C`` whose ball of radius ``r`` is this set (0-dim tensor)."""
        return self.gauge_batch(self._as_batch(x))[0]

    def is_feasible(self, x: Tensor, rtol: float = 1e-6) -> bool:
        """Whether ``‖x‖_C ≤ r·(1 + rtol)``."""
        return bool(self.gauge(x) <= self.radius * (1 + rtol))

    def shift_inside(self, x: Tensor) -> Tensor:
        """Feasibility shift (docs/sfw.md): ``x ← r·x/‖x‖_C`` when ``‖x‖_C > r``, else ``x`` unchanged.

        This is a radial rescaling, not a Euclidean projection. Returns a new tensor.
        """
        scale = self.shift_factors(self._as_batch(x), x.new_full((1,), self.radius))[0]
        return x * scale

    def shift_factors(self, x: Tensor, radii: Tensor) -> Tensor:
        """Per-row factors ``min(1, r/‖x‖_C)`` of the feasibility shift for a batch ``x``."""
        gauge = self.gauge_batch(x)
        return torch.where(gauge > radii, radii / gauge.clamp_min(torch.finfo(x.dtype).tiny), 1.0)

    def _as_batch(self, x: Tensor) -> Tensor:
        if x.numel() != self.numel:
            raise ValueError(
                f"{type(self).__name__} of shape {self.shape} got a tensor of shape {tuple(x.shape)}"
            )
        return x.reshape(1, *self.shape)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.config() == self.config()

    def __hash__(self) -> int:
        return hash((type(self), _hashable(self.config())))


class KConstraintSet(ConstraintSet):
    """A set parameterised by an integer ``k`` (sparsity, number of filters or rank).

    Attributes:
        k: the integer ``k``, ``1 ≤ k ≤ k_max``.
    """

    k: int

    @property
    @abstractmethod
    def k_max(self) -> int:
        """The largest meaningful ``k`` (n, number of filters, or the smaller matrix side)."""

    def with_k(self, k: int) -> KConstraintSet:
        """The same set with another ``k`` and the same L2 diameter (docs/sfw.md, delayed k)."""
        diameter = self.diameter
        relaxed = type(self)(**{**self.config(), "k": k})
        return relaxed.with_radius(diameter / relaxed.diameter_factor())


class VectorKConstraintSet(KConstraintSet):
    """A ``k``-set over a flat vector of ``n`` entries (K-sparse polytope, k-support ball).

    Args:
        n: the number of entries.
        k: ``1 ≤ k ≤ n``.
        radius: the radius ``r``.
    """

    def __init__(self, n: int, k: int, radius: float) -> None:
        super().__init__((n,), radius)
        self.k = check_k(type(self).__name__, k, n)

    @property
    def k_max(self) -> int:
        """``n``."""
        return self.shape[0]

    def config(self) -> dict[str, Any]:
        """Constructor arguments."""
        return {"n": self.shape[0], "k": self.k, "radius": self.radius}


def check_k(owner: str, k: int, k_max: int) -> int:
    """Validate an integer ``k`` in ``[1, k_max]``; the error names ``owner``."""
    if isinstance(k, bool) or int(k) != k or not 1 <= k <= k_max:
        raise ValueError(f"{owner}: k must be an integer in [1, {k_max}], got {k} (see resolve_k)")
    return int(k)


_SAME_WIDTH_INT = {
    torch.float64: torch.int64,
    torch.float32: torch.int32,
    torch.float16: torch.int16,
    torch.bfloat16: torch.int16,
}


def top_magnitude_indices(x: Tensor, k: int) -> Tensor:
    """Indices of the ``k`` entries of largest magnitude in each row of ``x`` (shape ``(b, n)``), unsorted.

    Non-negative IEEE floats order like their bit patterns read as signed integers, and ``torch.topk`` on
    CPU selects integers about 1.5× faster than floats, so ``|x|`` is viewed as an integer tensor of the
    same width. The selected set is the same as ``x.abs().topk(k)``'s up to ties (NaN never reaches an LMO:
    the optimizer skips steps with non-finite gradients).
    """
    a = x.abs()
    int_dtype = _SAME_WIDTH_INT.get(a.dtype)
    if int_dtype is not None:
        a = a.view(int_dtype)
    return a.topk(k, dim=1, sorted=False).indices


def active_radii(grad_norms: Tensor, radii: Tensor, ndim: int) -> Tensor:
    """Radii as a column for a batch of ``ndim`` dimensions, 0 where the gradient norm is below 1e-10.

    The LMO then returns ``v = 0`` on those rows (docs/sfw.md#the-sfw-step step 3).
    """
    active = torch.where(grad_norms < ZERO_GRAD_NORM, 0.0, radii.to(grad_norms.dtype))
    return active.view(-1, *([1] * (ndim - 1)))


def constraint_from_config(config: dict[str, Any]) -> ConstraintSet:
    """Rebuild a set from :meth:`ConstraintSet.to_config`.

    Raises:
        BadInputError: if the ``type`` key is missing (a ``ValueError``).
        UnknownNameError: if ``type`` names no registered set (a ``ValueError``; the message lists them).
    """
    cfg = dict(config)
    if "type" not in cfg:
        raise BadInputError(
            f"a constraint set config needs a 'type' key; registered constraint sets: "
            f"{', '.join(CONSTRAINT_SETS.names())}"
        )
    return CONSTRAINT_SETS.get(cfg.pop("type"))(**cfg)


def _hashable(value: Any) -> Hashable:
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_hashable(v) for v in value)
    return value

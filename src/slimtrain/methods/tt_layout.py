"""Tensor-train layouts of an MLP's hidden layers, shared by the NN-BCD and TT-SGD methods.

A layout gives every hidden layer of the registry's MLP a TT mode tuple (the row-major reshape of its
d_out × d_in weight, docs/nnbcd.md#tensor-train-projection) and all of them one uniform requested rank, as in
NN-BCD. The rank is either given directly (``rank``) or derived from a compression level
(``storage_reduction``: the largest uniform rank whose storage fraction over the compressed layers, CR₂ of
docs/metrics.md#ratios, is at most 1 − level). The level form is what ``compare`` writes, because recipe
levels are fractions in [0, 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from slimtrain.algebra.tt import tt_ranks, tt_storage
from slimtrain.models.mlp import MLP


class TTLayoutOptions(BaseModel):
    """Options choosing the TT layout of the hidden layers: one of ``rank`` and ``storage_reduction``.

    Giving ``rank`` alone switches ``storage_reduction`` off; giving both (non-null) is an error.

    Attributes:
        rank: Uniform requested TT rank of every hidden layer (capped per bond,
        docs/nnbcd.md#tensor-train-projection). storage_reduction: Compression level (default 0.8): the
        largest uniform rank with CR₂ ≤ 1 − level. modes: Layer name (``hidden.0``, …) → mode tuple; other
        layers get :func:`default_tt_modes`.
    """

    model_config = ConfigDict(extra="forbid")

    rank: int | None = Field(None, ge=1)
    storage_reduction: float | None = Field(0.8, ge=0.0, lt=1.0)
    modes: dict[str, list[int]] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _rank_replaces_the_default_level(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("rank") is not None and "storage_reduction" not in data:
            return {**data, "storage_reduction": None}
        return data

    @model_validator(mode="after")
    def _one_rank_choice(self) -> TTLayoutOptions:
        if (self.rank is None) == (self.storage_reduction is None):
            raise ValueError("give exactly one of 'rank' and 'storage_reduction'")
        return self


@dataclass(frozen=True)
class TTLayout:
    """Resolved layout: mode tuples by hidden-layer index, the uniform rank and its CR₂."""

    modes: dict[int, tuple[int, ...]]
    rank: int
    storage_fraction_compressed: float


def default_tt_modes(rows: int, cols: int) -> tuple[int, ...]:
    """Mode tuple for a ``rows × cols`` weight: its prime factors, pairs of 2 merged into 4, ascending.

    For example 256×64 → (4,)·7 and 1024×784 → (4,)·7 + (7, 7), the layouts of the paper's MNIST MLP.
    """
    n, factors, p = rows * cols, [], 2
    while p * p <= n:
        while n % p == 0:
            factors.append(p)
            n //= p
        p += 1
    if n > 1:
        factors.append(n)
    twos = factors.count(2)
    return tuple(sorted([4] * (twos // 2) + [2] * (twos % 2) + [f for f in factors if f != 2]))


def check_mlp(model: nn.Module, method: str) -> MLP:
    """Return ``model`` if it is the registry's MLP (``mlp``, ``lenet300_100``) with hidden layers.

    Raises:
        ValueError: Naming the method and the model class otherwise.
    """
    if not isinstance(model, MLP) or len(model.hidden) == 0:
        raise ValueError(
            f"method '{method}' needs the registry's 'mlp' or 'lenet300_100' model with at least one "
            f"hidden layer, got {type(model).__name__}"
        )
    return model


def _storage_fraction(shapes: list[tuple[int, int]], modes: list[tuple[int, ...]], rank: int) -> float:
    return sum(tt_storage(mode, rank) for mode in modes) / sum(r * c for r, c in shapes)


def resolve_tt_layout(mlp: MLP, options: TTLayoutOptions) -> TTLayout:
    """Mode tuples and uniform rank of every hidden layer of ``mlp`` under ``options``.

    Raises:
        ValueError: A ``modes`` entry names no hidden layer or does not multiply to its size, or no rank
            reaches the requested ``storage_reduction`` (the message names the key).
    """
    names = [f"hidden.{i}" for i in range(len(mlp.hidden))]
    unknown = set(options.modes) - set(names)
    if unknown:
        raise ValueError(f"'modes' names unknown layers {sorted(unknown)}; hidden layers: {', '.join(names)}")
    shapes = [(layer.out_features, layer.in_features) for layer in mlp.hidden]
    modes: dict[int, tuple[int, ...]] = {}
    for index, (name, (rows, cols)) in enumerate(zip(names, shapes, strict=True)):
        mode = tuple(options.modes.get(name) or default_tt_modes(rows, cols))
        if math.prod(mode) != rows * cols:
            raise ValueError(
                f"'modes.{name}': {mode} multiplies to {math.prod(mode)}, the {rows}×{cols} weight has "
                f"{rows * cols} entries"
            )
        modes[index] = mode
    mode_list = list(modes.values())
    if options.rank is not None:
        rank = options.rank
    else:
        target = 1.0 - options.storage_reduction
        largest = max(max(tt_ranks(mode, 10**9)) for mode in mode_list)
        fitting = [r for r in range(1, largest + 1) if _storage_fraction(shapes, mode_list, r) <= target]
        if not fitting:
            raise ValueError(
                f"'storage_reduction' {options.storage_reduction} is out of reach: even TT rank 1 stores "
                f"{_storage_fraction(shapes, mode_list, 1):.4f} of the hidden layers"
            )
        rank = fitting[-1]
    return TTLayout(
        modes=modes, rank=rank, storage_fraction_compressed=_storage_fraction(shapes, mode_list, rank)
    )

"""Helpers shared by the frozen configuration dataclasses (``ConstraintsConfig``, ``NNBCDConfig``, ...)."""

from __future__ import annotations

import numbers
from dataclasses import fields, replace
from typing import Any, TypeVar

C = TypeVar("C")


def with_options(cls: type[C], config: C | None, options: dict[str, Any], caller: str) -> C:
    """``config`` (or the defaults) with ``options`` replacing its fields; unknown names raise TypeError.

    Replacing re-runs the dataclass's ``__post_init__`` validation.
    """
    if config is not None and not isinstance(config, cls):
        raise TypeError(f"{caller}() config must be a {cls.__name__}, got {type(config).__name__}")
    valid = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    unknown = [name for name in options if name not in valid]
    if unknown:
        raise TypeError(
            f"{caller}() got unknown option(s) {', '.join(map(repr, unknown))}; "
            f"the options are the fields of {cls.__name__}: {', '.join(valid)}"
        )
    if config is None:
        return cls(**options)
    return replace(config, **options) if options else config  # type: ignore[type-var]


def is_real(value: Any) -> bool:
    """A real number that is not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_int(value: Any) -> bool:
    """An integer that is not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)

"""Validation of model options: each check returns the value or raises a ``ValueError`` naming the option."""

from __future__ import annotations

from collections.abc import Sequence


def check_positive_int(name: str, value: object) -> int:
    """Return ``value`` if it is a positive ``int`` (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def check_positive_number(name: str, value: object) -> float:
    """Return ``value`` if it is a positive ``int`` or ``float`` (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return value


def check_bool(name: str, value: object) -> bool:
    """Return ``value`` if it is a ``bool``."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def check_int_sequence(
    name: str, value: object, length: int | None = None, minimum: int = 1
) -> tuple[int, ...]:
    """Return ``value`` as a tuple if it is a list or tuple of ints ≥ ``minimum`` (``length`` of them)."""
    if not isinstance(value, Sequence) or isinstance(value, str | bytes):
        raise ValueError(f"{name} must be a list or tuple of integers, got {value!r}")
    if length is not None and len(value) != length:
        raise ValueError(f"{name} must have {length} entries, got {value!r}")
    for index, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, int) or item < minimum:
            raise ValueError(f"{name}[{index}] must be an integer >= {minimum}, got {item!r}")
    return tuple(value)

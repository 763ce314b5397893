"""Old import paths of moved public names: importable for one more release, with a DeprecationWarning."""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from typing import Any


def moved_names(module: str, moves: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` serving ``moves`` (old name → ``"new.module:NewName"``) with a warning.

    Args:
        module: The old module's name, for the message.
        moves: Each old name and where it lives now.
    """

    def __getattr__(name: str) -> Any:
        if name not in moves:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        target_module, _, target = moves[name].partition(":")
        warnings.warn(
            f"{module}.{name} moved to {target_module}.{target}; the old path goes away in the next release",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(target_module), target)

    return __getattr__

"""Experiments built on trained runs: sweep compression levels, compare methods, write reports, export.

- :func:`sweep` evaluates one trained run at every compression level;
- :func:`compare` trains and sweeps several recipes (and seeds) on one footing and aggregates the rows;
- :func:`write_report` writes the markdown/HTML report and plots of a compare or run directory;
- :func:`export_run` saves the physically smaller model of one level.

Usage: ``docs/training.md`` and ``docs/export.md``. The names are imported on first use. ``sweep``,
``compare`` and ``export_run`` are also the names of the modules defining them; the package attribute is
always the function, whichever was imported first (``from slimtrain.experiments.sweep import load_trained``
reaches the module's other names).
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from slimtrain.experiments.compare import compare
    from slimtrain.experiments.export_run import ExportResult, export_run
    from slimtrain.experiments.report import write_report
    from slimtrain.experiments.sweep import load_trained, sweep

# Public name → the module of this package that defines it.
_EXPORTS: dict[str, str] = {
    "ExportResult": "export_run",
    "compare": "compare",
    "export_run": "export_run",
    "load_trained": "sweep",
    "sweep": "sweep",
    "write_report": "report",
}

__all__ = [
    "ExportResult",
    "compare",
    "export_run",
    "load_trained",
    "sweep",
    "write_report",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


class _Package(types.ModuleType):
    """This package's module type: importing the module ``sweep`` does not replace the function ``sweep``.

    The import system binds every newly imported submodule as an attribute of its package; for the modules
    named after the function they export, that binding is skipped (the module stays in ``sys.modules``).
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if (
            isinstance(value, types.ModuleType)
            and name in _EXPORTS
            and value.__name__ == f"{__name__}.{name}"
        ):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

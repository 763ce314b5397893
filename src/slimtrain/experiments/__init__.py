"""Experiments built on trained runs: sweep compression levels, compare methods, write reports, export.

- :func:`sweep` evaluates one trained run at every compression level;
- :func:`compare` trains and sweeps several recipes (and seeds) on one footing and aggregates the rows;
- :func:`write_report` writes the markdown/HTML report and plots of a compare or run directory;
- :func:`export_run` saves the physically smaller model of one level;
- :func:`select` chooses the most compressed level within an accuracy drop of the dense model.

Usage: ``docs/training.md`` and ``docs/export.md``. The names are imported on first use from the modules
:mod:`~slimtrain.experiments.sweeping`, :mod:`~slimtrain.experiments.comparison`,
:mod:`~slimtrain.experiments.report`, :mod:`~slimtrain.experiments.exporting` and
:mod:`~slimtrain.experiments.selecting`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from slimtrain._lazy import lazy_exports

if TYPE_CHECKING:
    from slimtrain.experiments.comparison import compare
    from slimtrain.experiments.exporting import ExportResult, export_run
    from slimtrain.experiments.report import write_report
    from slimtrain.experiments.selecting import select
    from slimtrain.experiments.sweeping import load_trained, sweep

# Public name → the module of this package that defines it.
_EXPORTS: dict[str, str] = {
    "ExportResult": "slimtrain.experiments.exporting",
    "compare": "slimtrain.experiments.comparison",
    "export_run": "slimtrain.experiments.exporting",
    "load_trained": "slimtrain.experiments.sweeping",
    "select": "slimtrain.experiments.selecting",
    "sweep": "slimtrain.experiments.sweeping",
    "write_report": "slimtrain.experiments.report",
}

__all__ = [
    "ExportResult",
    "compare",
    "export_run",
    "load_trained",
    "select",
    "sweep",
    "write_report",
]


__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)

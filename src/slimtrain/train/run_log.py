"""Run logs: CSV files (always) and TensorBoard scalars (when the ``tensorboard`` package is installed)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any


class RunLog:
    """Appends rows to ``<run_dir>/<table>.csv`` and mirrors numeric values to TensorBoard.

    Args:
        run_dir: the run directory.
        tensorboard: also write TensorBoard event files to ``<run_dir>/tensorboard`` if the package is
            installed (silently CSV-only otherwise).
    """

    TABLES = ("train_log", "epochs")

    def __init__(self, run_dir: str | Path, tensorboard: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self._writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                SummaryWriter = None
            if SummaryWriter is not None:
                self._writer = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))

    def path(self, table: str) -> Path:
        """CSV file of ``table``."""
        return self.run_dir / f"{table}.csv"

    def append(self, table: str, row: dict[str, Any]) -> None:
        """Append ``row`` (which must contain ``step``) to ``table``."""
        path = self.path(table)
        new = not path.exists()
        with path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)
        if self._writer is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, int | float) and not isinstance(value, bool):
                    self._writer.add_scalar(f"{table}/{key}", value, row["step"])
            self._writer.flush()

    def restart(self, after_step: int | None) -> None:
        """Start the logs afresh (``None``) or drop rows written after ``after_step`` (a resumed run)."""
        for table in self.TABLES:
            path = self.path(table)
            if not path.exists():
                continue
            if after_step is None:
                path.unlink()
                continue
            with path.open(newline="") as handle:
                rows = [r for r in csv.DictReader(handle) if int(r["step"]) <= after_step]
            if not rows:
                path.unlink()
                continue
            with path.open("w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)

    def close(self) -> None:
        """Flush and close the TensorBoard writer."""
        if self._writer is not None:
            self._writer.close()

"""Training checkpoints: atomic ``torch.save`` files listed, with checksums, in a manifest.

A run directory holds ``checkpoints/step-<N>.pt`` files and ``checkpoints/manifest.json``. The manifest is
rewritten (atomically) only after a checkpoint file is complete, so a crash at any moment leaves a manifest
that names only whole files. Loading verifies the checksum; a corrupted or truncated newest checkpoint is
reported and the previous good one is used. Files are read with ``torch.load(weights_only=True)``: nothing
is unpickled but tensors and plain containers.
"""

from __future__ import annotations

import io
import json
import pickle
import warnings
from pathlib import Path
from typing import Any

import torch

from slimtrain.errors import CheckpointError
from slimtrain.io import atomic_write_bytes, atomic_write_text, remove_stale_temporaries, sha256_file

MANIFEST = "manifest.json"


class CheckpointStore:
    """The checkpoints of one run.

    Args:
        directory: where checkpoint files and the manifest live.
        keep: how many most recent checkpoints to keep on disk (at least 2, so a corrupted newest file can
            fall back to the previous one).
    """

    def __init__(self, directory: str | Path, keep: int = 2) -> None:
        self.directory = Path(directory)
        self.keep = max(2, keep)

    @property
    def manifest_path(self) -> Path:
        """Path of the manifest file."""
        return self.directory / MANIFEST

    def entries(self) -> list[dict[str, Any]]:
        """Manifest entries (oldest first): ``{"file", "sha256", "step", "final"}``."""
        if not self.manifest_path.exists():
            return []
        try:
            return json.loads(self.manifest_path.read_text())["checkpoints"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise CheckpointError(f"checkpoint manifest {self.manifest_path} is corrupted: {err}") from None

    def save(
        self, state: dict[str, Any], step: int, *, final: bool = False, record: dict[str, Any] | None = None
    ) -> Path:
        """Write ``state`` atomically as the checkpoint of ``step`` and record it in the manifest.

        ``record`` adds JSON values to its manifest entry (the run identity's ``init_from_sha256``).
        """
        buffer = io.BytesIO()
        torch.save(state, buffer)
        if not self.manifest_path.exists():
            # before the first checkpoint file: a kill between that file and its manifest entry then leaves
            # an unlisted file (removed by the next save), not a file that cannot be verified
            atomic_write_text(self.manifest_path, json.dumps({"checkpoints": []}, indent=1))
        name = f"step-{step:08d}.pt" if not final else "final.pt"
        path = self.directory / name
        atomic_write_bytes(path, buffer.getvalue())
        entries = [e for e in self.entries() if e["file"] != name]
        entries.append(
            {**(record or {}), "file": name, "sha256": sha256_file(path), "step": step, "final": final}
        )
        periodic = [e for e in entries if not e["final"]]
        stale = periodic[: max(0, len(periodic) - self.keep)]
        kept = [e for e in entries if e not in stale]
        atomic_write_text(self.manifest_path, json.dumps({"checkpoints": kept}, indent=1))
        for entry in stale:
            (self.directory / entry["file"]).unlink(missing_ok=True)
        self._remove_leftovers({e["file"] for e in kept})
        return path

    def _remove_leftovers(self, listed: set[str]) -> None:
        # A process killed inside `save` leaves a temporary file, or a checkpoint file the manifest no longer
        # lists; without this they would pile up over many interruptions.
        remove_stale_temporaries(self.directory)
        for path in self.directory.glob("step-*.pt"):
            if path.name not in listed:
                path.unlink(missing_ok=True)

    def load_latest(self, *, final_only: bool = False) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """Return ``(state, entry)`` of the newest checkpoint that verifies, or ``None`` if there is none.

        Raises:
            CheckpointError: checkpoints are listed but none of them verifies, or checkpoint files are there
                but the manifest holding their checksums is missing.
        """
        entries = [e for e in self.entries() if e["final"] or not final_only]
        if not entries and not self.manifest_path.exists():
            files = sorted(p.name for p in self.directory.glob("*.pt"))
            if files:  # never silently ignored (and, on resume, overwritten by a fresh run)
                raise CheckpointError(
                    f"checkpoint manifest {self.manifest_path} is missing: {', '.join(files)} "
                    f"{'is' if len(files) == 1 else 'are'} there but cannot be verified without the "
                    "checksums it lists; restore the manifest, or train the run again"
                )
        if not entries:
            return None
        problems = []
        for entry in reversed(entries):
            path = self.directory / entry["file"]
            problem = self._verify(path, entry)
            if problem is None:
                try:
                    state = torch.load(path, map_location="cpu", weights_only=True)
                except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
                    problems.append(f"{path} holds more than tensors and plain values, refused: {err}")
                    continue
                if problems:
                    warnings.warn(
                        "skipped unusable checkpoint(s): " + "; ".join(problems) + f"; using {path}",
                        stacklevel=2,
                    )
                return state, entry
            problems.append(problem)
        raise CheckpointError("no usable checkpoint: " + "; ".join(problems))

    @staticmethod
    def _verify(path: Path, entry: dict[str, Any]) -> str | None:
        if not path.exists():
            return f"{path} is missing"
        if sha256_file(path) != entry["sha256"]:
            return f"{path} is corrupted or truncated (checksum mismatch)"
        return None

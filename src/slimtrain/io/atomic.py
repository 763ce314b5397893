"""Atomic writes: a file is either its old content or its complete new content, never half-written."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from slimtrain.io.modes import apply_umask

TEMP_SUFFIX = ".tmp"
"""Suffix of the temporary files :func:`atomic_write` renames into place (left behind only by a killed
process; :func:`remove_stale_temporaries` deletes them)."""


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """Write ``path`` through ``write(file)`` into a temporary file beside it, fsync, then rename over it.

    The file gets the mode a plain ``open(path, "w")`` would give it, ``0o666 & ~umask``
    (:func:`slimtrain.io.modes.apply_umask`), not the owner-only mode of the temporary.

    Raises:
        OSError: the directory is not writable or the disk is full; the previous file is left untouched.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    except OSError as err:
        raise OSError(err.errno, f"cannot write {path}: {err.strerror or err}") from err
    try:
        with os.fdopen(fd, "wb") as handle:
            apply_umask(tmp)
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        # Name the target: a bare "No space left on device" does not say which file was being written.
        raise OSError(err.errno, f"cannot write {path}: {err.strerror or err}") from err
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_stale_temporaries(directory: str | Path) -> list[Path]:
    """Delete the temporary files a killed :func:`atomic_write` left in ``directory``; return their paths.

    Only call this where no other process is writing into ``directory`` at the same time.
    """
    stale = sorted(Path(directory).glob(f".*{TEMP_SUFFIX}"))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Atomically replace ``path`` with ``data``."""
    atomic_write(path, lambda handle: handle.write(data))


def atomic_write_text(path: str | Path, text: str) -> None:
    """Atomically replace ``path`` with ``text`` (UTF-8)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's content."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()

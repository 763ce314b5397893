"""Finding a dataset's directory and reading its files, with gzip and SHA256SUMS support."""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

from slimtrain.errors import DataFormatError, DatasetNotFoundError

__all__ = ["DATA_DIR_ENV", "checked_bytes", "find_dataset_dir", "find_file", "read_data_file"]

#: Environment variable naming a root directory that holds one sub-directory per dataset.
DATA_DIR_ENV = "SLIMTRAIN_DATA_DIR"
_CHECKSUMS = "SHA256SUMS"


def find_file(directory: Path, name: str) -> Path | None:
    """``directory/name`` if it exists, else ``directory/name.gz`` if that exists, else ``None``."""
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def find_dataset_dir(
    name: str,
    data_dir: str | Path | None,
    missing: Callable[[Path], list[str]],
    *,
    how_to_get: str,
    subdirs: Sequence[str] = (),
    system_dirs: Sequence[Path] = (),
) -> Path:
    """Return the first directory that holds a dataset's files.

    Places are tried in order: ``data_dir`` and ``data_dir/<name>``, then ``$SLIMTRAIN_DATA_DIR/<name>``,
    then each of ``system_dirs``; each place also as ``<place>/<subdir>`` for every entry of ``subdirs``
    (the directory name of a format's archive, e.g. ``cifar-10-batches-py``).

    Args:
        name: registry name of the dataset.
        data_dir: directory given by the user, or ``None``.
        missing: returns the names of the required files a directory lacks (empty when complete).
        how_to_get: sentence appended to the error saying how to obtain the data.
        subdirs: archive directory names to look for inside each place.
        system_dirs: system-wide install locations tried last.

    Raises:
        DatasetNotFoundError: no place holds the files; the message lists every place and what it lacked.
    """
    tried: list[str] = []
    bases: list[Path] = []
    if data_dir is None:
        tried.append("  data_dir: not given")
    else:
        bases += [Path(data_dir), Path(data_dir) / name]
    env_root = os.environ.get(DATA_DIR_ENV)
    if env_root:
        bases.append(Path(env_root) / name)
    else:
        tried.append(f"  ${DATA_DIR_ENV}/{name}: ${DATA_DIR_ENV} is not set")
    bases += [Path(d) for d in system_dirs]
    for candidate in (c for base in bases for c in (base, *(base / s for s in subdirs))):
        if not candidate.is_dir():
            tried.append(f"  {candidate}: no such directory")
            continue
        lacking = missing(candidate)
        if not lacking:
            return candidate
        tried.append(f"  {candidate}: lacks {', '.join(lacking)}")
    raise DatasetNotFoundError(
        f"dataset {name!r} not found. Places looked:\n" + "\n".join(tried) + f"\n{how_to_get}"
    )


def _expected_digest(path: Path) -> str | None:
    """The SHA-256 that a ``SHA256SUMS`` file beside ``path`` lists for it, or ``None``."""
    sums = path.parent / _CHECKSUMS
    if not sums.is_file():
        return None
    for number, line in enumerate(sums.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or len(parts[0]) != 64:
            raise DataFormatError(f"{sums}: line {number} is not '<sha256>  <file name>': {line!r}")
        if parts[1].lstrip("*").strip() == path.name:  # '*' marks binary mode in sha256sum output
            return parts[0].lower()
    return None


def checked_bytes(path: Path) -> bytes:
    """Read ``path`` whole and check it against a ``SHA256SUMS`` beside it when that lists the file.

    The hash is taken over the bytes just read, so verification costs no second read and nothing is cached.

    Raises:
        DataFormatError: the checksum does not match.
    """
    data = path.read_bytes()
    expected = _expected_digest(path)
    if expected is not None:
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise DataFormatError(
                f"{path}: SHA-256 {actual} does not match {expected} listed in {path.parent / _CHECKSUMS}; "
                "the file is corrupted or incomplete"
            )
    return data


def read_data_file(path: Path) -> bytes:
    """Checksum-verified contents of ``path``, decompressed when its name ends in ``.gz``.

    Raises:
        DataFormatError: bad checksum, or corrupted or truncated gzip data.
    """
    data = checked_bytes(path)
    if path.suffix != ".gz":
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataFormatError(f"{path}: corrupted or truncated gzip data ({exc})") from exc

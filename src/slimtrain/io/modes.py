"""File modes of what slimtrain writes: those of a plain ``open``/``mkdir`` under the process umask.

``tempfile.mkstemp`` and ``tempfile.mkdtemp`` create their file / directory readable by the owner only
(``0o600`` / ``0o700``), whatever the umask. Files slimtrain writes through a temporary and renames into
place (checkpoints, ``results.json``, sweep and comparison results, reports, exported models, ONNX files)
are given the mode a plain ``open(path, "w")`` or ``mkdir`` would have given them, ``0o666 & ~umask`` and
``0o777 & ~umask`` (``0o644`` / ``0o755`` under the usual umask ``022``), before they are renamed into place.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

_PROC_STATUS = "/proc/self/status"


def process_umask() -> int:
    """The process umask.

    Read from ``/proc/self/status`` where the kernel reports it (Linux ≥ 4.7), which changes nothing;
    elsewhere it is read the only portable way, by setting it with :func:`os.umask` and restoring it at once
    (another thread creating a file in between would get the temporary mask ``0o077``, which only restricts).
    """
    try:
        with open(_PROC_STATUS, encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def default_mode(*, directory: bool, umask: int | None = None) -> int:
    """``0o777 & ~umask`` for a directory, ``0o666 & ~umask`` for a file (``umask``: the process's)."""
    mask = process_umask() if umask is None else umask
    return (0o777 if directory else 0o666) & ~mask


def apply_umask(*paths: str | os.PathLike[str], umask: int | None = None) -> None:
    """Give each path the mode a plain ``open``/``mkdir`` would have given it under ``umask``.

    Meant for files and directories created by ``tempfile.mkstemp`` / ``mkdtemp`` (owner-only) before they
    are renamed into place. Directories are not descended into; symbolic links are left alone.

    Args:
        paths: Files or directories this process created.
        umask: The umask to apply; default the process's, read once per call (:func:`process_umask`).
    """
    mask = process_umask() if umask is None else umask
    for path in paths:
        info = os.lstat(path)
        if stat.S_ISLNK(info.st_mode):
            continue
        os.chmod(path, default_mode(directory=stat.S_ISDIR(info.st_mode), umask=mask))


def apply_umask_tree(root: str | os.PathLike[str], umask: int | None = None) -> None:
    """:func:`apply_umask` on ``root`` and every file and directory below it."""
    mask = process_umask() if umask is None else umask
    root = Path(root)
    apply_umask(root, *root.rglob("*"), umask=mask)

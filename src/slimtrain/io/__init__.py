"""Safe file writing shared by checkpoints, results and exported models (atomic, with umask modes)."""

from slimtrain.io.atomic import (
    atomic_write_bytes,
    atomic_write_text,
    remove_stale_temporaries,
    sha256_file,
)
from slimtrain.io.modes import apply_umask, apply_umask_tree, default_mode, process_umask

__all__ = [
    "apply_umask",
    "apply_umask_tree",
    "atomic_write_bytes",
    "atomic_write_text",
    "default_mode",
    "process_umask",
    "remove_stale_temporaries",
    "sha256_file",
]

"""Safe file writing shared by checkpoints, results and exported models."""

from slimtrain.io.atomic import (
    atomic_write_bytes,
    atomic_write_text,
    remove_stale_temporaries,
    sha256_file,
)

__all__ = ["atomic_write_bytes", "atomic_write_text", "remove_stale_temporaries", "sha256_file"]

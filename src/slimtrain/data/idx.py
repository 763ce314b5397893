"""Reader of the IDX binary format (MNIST, Fashion-MNIST).

An IDX file is two zero bytes, a type code, the number of dimensions ``d``, ``d`` big-endian uint32 sizes,
then the values in C order, big-endian. See LeCun et al., "The MNIST database of handwritten digits".
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from slimtrain.data.files import read_data_file
from slimtrain.errors import DataFormatError

__all__ = ["parse_idx", "read_idx"]

_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def parse_idx(data: bytes, source: str) -> Tensor:
    """Decode IDX bytes into a tensor of the file's shape and (native-endian) type.

    Args:
        data: the uncompressed file contents.
        source: name of the file, used in error messages.

    Raises:
        DataFormatError: bad magic number, unknown type code, or a size that differs from the header's.
    """
    if len(data) < 4:
        raise DataFormatError(f"{source}: {len(data)} bytes is too short for an IDX header")
    zero, code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or code not in _DTYPES:
        raise DataFormatError(f"{source}: not an IDX file (magic number 0x{data[:4].hex()})")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataFormatError(f"{source}: truncated IDX header ({len(data)} bytes, {ndim} dimensions)")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = _DTYPES[code]
    expected = header + math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        raise DataFormatError(
            f"{source}: {len(data)} bytes but the IDX header (shape {shape}, {dtype.name}) implies "
            f"{expected}; the file is truncated or corrupted"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return torch.from_numpy(array.astype(dtype.newbyteorder("="), copy=True))


def read_idx(path: str | Path) -> Tensor:
    """Read an IDX file, gzipped (name ends in ``.gz``) or raw, checking a ``SHA256SUMS`` beside it.

    Raises:
        DataFormatError: bad checksum, gzip data, magic number or size; the message names the file.
    """
    path = Path(path)
    return parse_idx(read_data_file(path), str(path))

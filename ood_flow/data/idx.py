"""A reader for IDX files (MNIST's format), gzipped or not, that never writes anything.

torchvision extracts the ``.gz`` files next to themselves, which fails on a read-only
data root; reading the gzip stream directly works anywhere and, with ``limit``,
decompresses only the bytes it needs.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from ood_flow.errors import InputError

# IDX type codes -> big-endian numpy dtypes (http://yann.lecun.com/exdb/mnist/).
_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path, *, ndim: int, limit: int | None = None) -> np.ndarray:
    """Read the first ``limit`` items (all when None) of an IDX file.

    Args:
        path: the file; a name ending in ``.gz`` is read through gzip.
        ndim: the number of dimensions the caller expects (1 for labels, 3 for images).
        limit: read at most this many items along the first axis.

    Raises:
        InputError: the magic number, the dimensions or the length are not those of a
            complete IDX file with ``ndim`` dimensions.
    """
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            dtype, dims = _header(f, path, ndim)
            n = dims[0] if limit is None else min(limit, dims[0])
            count = n * int(np.prod(dims[1:], dtype=np.int64))
            data = f.read(count * dtype.itemsize)
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(f"cannot read {path}: {exc or type(exc).__name__} (corrupt or truncated?)") from None
    if len(data) < count * dtype.itemsize:
        raise InputError(
            f"{path} is truncated: expected {count * dtype.itemsize} data bytes for {n} items, found {len(data)}"
        )
    return np.frombuffer(data, dtype=dtype).astype(dtype.newbyteorder("="), copy=False).reshape(n, *dims[1:])


def _header(f, path: Path, ndim: int) -> tuple[np.dtype, tuple[int, ...]]:
    magic = f.read(4)
    if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] not in _DTYPES:
        raise InputError(f"{path} is not an IDX file (magic number {magic.hex() or 'missing'})")
    if magic[3] != ndim:
        raise InputError(f"{path}: expected an IDX file with {ndim} dimensions, found {magic[3]}")
    raw = f.read(4 * ndim)
    if len(raw) < 4 * ndim:
        raise InputError(f"{path} is truncated: incomplete IDX header")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4"))
    return np.dtype(_DTYPES[magic[2]]), dims


def read_idx_pair(images: Path, labels: Path, *, limit: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, H, W)`` uint8 and labels ``(N,)`` int64 from two IDX files of equal length."""
    x = read_idx(images, ndim=3, limit=limit)
    if x.dtype != np.uint8:
        raise InputError(f"{images}: expected unsigned bytes (IDX type 0x08), found {x.dtype}")
    y = read_idx(labels, ndim=1, limit=limit).astype(np.int64)
    if len(x) != len(y):
        raise InputError(f"{images} holds {len(x)} images but {labels} holds {len(y)} labels")
    return x, y

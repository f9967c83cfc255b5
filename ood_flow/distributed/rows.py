"""Sharded scoring and embedding: whole batches of the single-process batch grid per process.

Process ``r`` of ``W`` computes global batches ``r, r + W, r + 2W, ...`` of exactly the batches one
process would read, so each row is computed by the same operations on the same batch as in a
single-process run (bit-identical on the CPU at equal thread counts); :func:`gather_rows` then
puts the rows of every process back in the original order.
"""

from __future__ import annotations

from typing import Iterable, Iterator, TypeVar

import numpy as np

from ood_flow.distributed.group import Dist

T = TypeVar("T")


def own_batches(batches: Iterable[T], d: Dist) -> Iterator[T]:
    """This process's batches of the global sequence ``batches`` (every ``world``-th, from ``rank``).

    Every process still reads the whole sequence (so an unreadable file fails every process alike);
    only the model's work is shared out.
    """
    for i, batch in enumerate(batches):
        if i % d.world == d.rank:
            yield batch


def interleave(parts: list[np.ndarray], batch_size: int) -> np.ndarray:
    """Rows that process ``r`` computed for global batches ``r, r + W, ...`` (``parts[r]``, concatenated
    in its order) back in global order.

    Example:
        >>> interleave([np.array([0, 1, 4]), np.array([2, 3])], 2).tolist()
        [0, 1, 2, 3, 4]
    """
    chunks = [np.split(p, range(batch_size, len(p), batch_size)) if len(p) else [] for p in parts]
    ordered = [c[k] for k in range(max(map(len, chunks), default=0)) for c in chunks if k < len(c)]
    return np.concatenate(ordered) if ordered else parts[0][:0]


def gather_rows(d: Dist, batch_size: int, arrays: dict[str, np.ndarray | None]) -> dict[str, np.ndarray | None]:
    """Every process's rows of ``arrays`` (None stays None), in global order, on every process."""
    if not d.active or d.world == 1:
        return arrays
    everyone = d.gather(arrays)
    names = dict.fromkeys(k for e in everyone for k in e)
    out = {}
    for k in names:
        parts = [e.get(k) for e in everyone]
        present = [p for p in parts if p is not None]
        out[k] = interleave([p if p is not None else present[0][:0] for p in parts], batch_size) if present else None
    return out

"""Sources read as a stream: decoded, converted and resized through a DataLoader, in fixed-size batches.

Every SOURCE opens to a :class:`Source`. Its samples are either rows already in memory (array files,
the IDX and CIFAR datasets, tables) or image files decoded on demand (folders, single images, the
notMNIST and CelebA folder layouts). :meth:`Source.batches` reads them in order through a
``torch.utils.data.DataLoader`` (worker processes where more than two cores exist, so decoding overlaps
the model; see :func:`default_workers`), applies a transform there (a model's input conversion, a
backbone's resize and normalisation; once per group of same-sized files), and yields batches of exactly
``batch_size`` samples (the last one may be smaller), so memory stays flat however many files a folder
holds. :meth:`Source.load` reads everything into a :class:`~ood_flow.data.dataset.Dataset` for the
commands that need it whole.

Rows, order, ids and skipped files are the same whichever way a source is read: files in path
order, unreadable ones skipped (with ``skip_invalid``) or an error naming the first, ``limit``
counting readable images only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from ood_flow.data.dataset import Dataset
from ood_flow.data.workers import (LOAD_CHUNK, Batch, Decoder, Packed, Rebatcher, Reader, Same,  # noqa: F401
                                   Transform, as_is)
from ood_flow.environment import WORKERS_ENV, default_workers  # noqa: F401 (re-exported)
from ood_flow.errors import InputError


@dataclass
class Source:
    """A SOURCE opened for reading.

    Attributes:
        items: uint8 images ``(N, C, H, W)`` or float32 vectors ``(N, D)`` in memory, or a list of
            image files decoded on demand by ``decode``.
        ids, labels: per item (a file's id is its path); labels None where unknown.
        kind, name, source, label_names, meta: as in :class:`~ood_flow.data.dataset.Dataset`.
        decode: reads one file of ``items`` (see :data:`Decoder`).
        limit: read at most this many samples (files: readable ones, in path order).
        skip_invalid: skip unreadable files (recorded in ``skipped``) instead of failing.
        where: how messages name the source (``folder /data/x``).
        skip_hint: unreadable-file errors suggest ``--skip-invalid``.
        skipped: ``(path, reason)`` of files skipped by the last read.
        read_size: (height, width) at which :meth:`load` reads files of another size (resized).
    """

    items: Tensor | list[Path]
    ids: np.ndarray
    labels: np.ndarray | None
    kind: str
    name: str
    source: str
    label_names: list[str] | None = None
    decode: Decoder | None = None
    limit: int | None = None
    skip_invalid: bool = False
    where: str = ""
    skip_hint: bool = True
    skipped: list[tuple[str, str]] = field(default_factory=list)
    read_size: tuple[int, int] | None = None
    meta: dict = field(default_factory=dict)

    @classmethod
    def from_dataset(cls, ds: Dataset) -> Source:
        """A source over samples already in memory."""
        return cls(items=ds.x, ids=ds.ids, labels=ds.labels, kind=ds.kind, name=ds.name, source=ds.source,
                   label_names=ds.label_names, skipped=list(ds.skipped), where=ds.name, meta=dict(ds.meta))

    @property
    def in_memory(self) -> bool:
        return isinstance(self.items, Tensor)

    @property
    def sample_shape(self) -> tuple[int, ...] | None:
        """Shape of one sample where known before reading (rows in memory), else None."""
        return tuple(self.items.shape[1:]) if self.in_memory else None

    def __len__(self) -> int:
        """The number of samples, or for files an upper bound (unreadable files are skipped)."""
        n = len(self.items)
        return n if self.limit is None else min(n, self.limit)

    def batches(self, batch_size: int, transform: Transform | None = None, *,
                workers: int | None = None) -> Iterator[Batch]:
        """Read the samples in order, ``transform`` applied, in batches of ``batch_size``.

        Args:
            batch_size: samples per batch; every batch but the last has exactly this many.
            transform: applied to the images as they are read (rows in memory a batch at a time, files
                a group of one size at a time), in the worker processes if any; None keeps the samples
                as they are (files must then share a shape).
            workers: worker processes; default :func:`default_workers` (none for rows already in
                memory that need no transform).

        Raises:
            InputError: an unreadable file (without ``skip_invalid``), an image the transform refuses,
                or no readable image at all.
        """
        if batch_size < 1:
            raise InputError(f"batch size must be at least 1, got {batch_size}")
        if not self.in_memory:
            self.skipped = []
        if self.in_memory and transform is None:
            yield from self._row_batches(batch_size)
            return
        rebatch = Rebatcher(batch_size, self.labels is not None)
        for chunk in self._chunks(batch_size, transform, workers):
            yield from rebatch.add(*chunk)
        yield from rebatch.rest()
        if rebatch.count == 0 and not self.in_memory:
            raise InputError(self._nothing_readable())

    def load(self, *, workers: int | None = None) -> Dataset:
        """Every sample in memory as a :class:`Dataset`.

        Files must share one height and width (or are resized to ``read_size``); grayscale images
        join colour ones as three channels (repeated).
        """
        if self.in_memory:
            return Dataset(x=self.items[: self.limit], ids=self.ids[: self.limit],
                           labels=_first(self.labels, self.limit), kind=self.kind, name=self.name,
                           source=self.source, label_names=self.label_names, skipped=list(self.skipped),
                           meta=dict(self.meta))
        arrays, ids, labels = [], [], []
        for batch in self.batches(LOAD_CHUNK, Same(self.read_size), workers=workers):
            # Images from a worker are views of its chunk's shared-memory segment, held open by a file
            # descriptor while any of them lives: keeping every chunk's would exhaust the limit on open files
            # for a big folder (1024 on many systems: "received 0 items of ancdata"). A copy lets it go.
            arrays += [image.clone() if image.is_shared() else image for image in batch.x]
            ids.append(batch.ids)
            labels.append(batch.labels)
            check_same_size(arrays, ids[0][0], batch.x, batch.ids)
        return Dataset(x=_stack(arrays), ids=np.concatenate(ids), kind=self.kind, name=self.name,
                       labels=None if self.labels is None else np.concatenate(labels),
                       source=self.source, label_names=self.label_names, skipped=list(self.skipped))

    # -- reading -----------------------------------------------------------------------------------
    def _row_batches(self, batch_size: int) -> Iterator[Batch]:
        n = len(self)
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            yield Batch(self.items[start:stop], self.ids[start:stop], _slice(self.labels, start, stop))

    def _chunks(self, batch_size: int, transform: Transform | None, workers: int | None):
        """``(x, ids, labels)`` of the readable samples, in order, until ``limit`` of them are read."""
        reader = Reader(self.items, self.decode, transform)
        n_workers = default_workers() if workers is None else workers
        if len(self.items) <= batch_size:
            n_workers = 0  # one chunk: a worker process would only add its start-up time
        loader = DataLoader(reader, batch_size=batch_size, num_workers=n_workers, collate_fn=as_is)
        kept = 0
        for positions, x, failures in loader:
            if isinstance(x, Packed):
                x = x.unpack()
            positions, x = self._accept(positions, x, failures, kept)
            kept += len(positions)
            if positions:
                yield x, self.ids[positions], None if self.labels is None else self.labels[positions]
            if self.limit is not None and kept >= self.limit:
                break

    def _accept(self, positions: list[int], x, failures: list[tuple[int, str, bool]], kept: int):
        """The readable positions up to the limit; failures before the cut are skipped or raised."""
        if self.limit is not None and len(positions) > self.limit - kept:
            positions = positions[: self.limit - kept]
            x = x[: len(positions)]
        last = positions[-1] if positions and self.limit is not None and kept + len(positions) >= self.limit else None
        for position, reason, fatal in failures:
            if last is not None and position > last:
                break
            path = str(self.items[position])
            if fatal:
                raise InputError(reason)
            if not self.skip_invalid:
                hint = "; pass --skip-invalid to skip such files" if self.skip_hint else ""
                raise InputError(f"cannot read image {path}: {reason}{hint}")
            self.skipped.append((path, reason))
        return positions, x

    def _nothing_readable(self) -> str:
        first = f", first: {self.skipped[0][0]}: {self.skipped[0][1]}" if self.skipped else ""
        return f"{self.where}: no readable images ({len(self.skipped)} skipped{first})"


def _first(a: np.ndarray | None, limit: int | None) -> np.ndarray | None:
    return None if a is None else a[:limit]


def _slice(a: np.ndarray | None, start: int, stop: int) -> np.ndarray | None:
    return None if a is None else a[start:stop]


def check_same_size(read: list[Tensor], first_id: str, new: list[Tensor], new_ids) -> None:
    """Raise naming the first of ``new`` whose height and width differ from those of ``read[0]``."""
    h0, w0 = read[0].shape[1:]
    for image, i in zip(new, new_ids):
        if tuple(image.shape[1:]) != (h0, w0):
            h, w = image.shape[1:]
            raise InputError(f"images differ in size: {i} is {w}x{h} but {first_id} is {w0}x{h0} (width x height); "
                             "make them one size first")


def _stack(images: list[Tensor]) -> Tensor:
    """One tensor of images sharing a size; grayscale repeated to three channels when any is in colour."""
    if any(image.shape[0] == 3 for image in images):
        images = [image.expand(3, -1, -1) if image.shape[0] == 1 else image for image in images]
    return torch.stack(images)


def replace(src: Source, /, **changes) -> Source:
    """A copy of ``src`` with ``changes`` (and a fresh ``skipped`` list)."""
    return dataclasses.replace(src, skipped=[], **changes)

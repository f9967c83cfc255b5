"""What the DataLoader workers of a :class:`~ood_flow.data.stream.Source` run, and how their chunks
become batches: :class:`Reader` decodes and transforms a chunk of positions in a worker process;
:class:`Rebatcher` regroups the readable samples into batches of exactly the requested size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ood_flow.data.pixels import resize_images
from ood_flow.errors import InputError

# A decoder maps one file to ``(uint8 (C, H, W) array, "")`` or ``(None, reason)``.
Decoder = Callable[[Path], "tuple[np.ndarray | None, str]"]
# A transform maps uint8 images ``(B, C, H, W)`` to model inputs; it raises InputError for an image it
# cannot take. It must be picklable (a module-level class or function) to run in worker processes. One with
# an ``output_shape(n)`` method takes ``out=``, a channels-last batch of that shape, to write into.
Transform = Callable[[Tensor], Tensor]


@dataclass
class Batch:
    """Consecutive samples of a source: ``x`` (transformed), their ids and labels."""

    x: Tensor
    ids: np.ndarray
    labels: np.ndarray | None

    def __len__(self) -> int:
        return int(self.x.shape[0])


LOAD_CHUNK = 256
# Input values (8-bit) transformed in one call for files: 2**21 is 2 MB, 8 MB as float32; a chunk of
# 28x28 images goes in one call, 500x375 colour photos three at a time.
RUN_VALUES = 2**21


@dataclass(frozen=True)
class Same:
    """A read that keeps each file's own shape (:meth:`Source.load`), or resizes it to ``size``."""

    size: tuple[int, int] | None = None
    keeps_shape = True

    def __call__(self, x: Tensor) -> Tensor:
        if self.size is None or tuple(x.shape[-2:]) == self.size:
            return x
        return resize_images(x, self.size)


class Reader(torch.utils.data.Dataset):
    """What the DataLoader workers run: fetch a chunk of positions, decode and transform them."""

    def __init__(self, items, decode: Decoder | None, transform: Transform | None):
        self.items, self.decode, self.transform = items, decode, transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitems__(self, positions: list[int]):
        if isinstance(self.items, Tensor):
            if hasattr(self.transform, "output_shape"):  # it writes into a batch given (shared memory in a worker)
                out = batch_tensor(self.transform.output_shape(len(positions)), channels_last=True)
                return list(positions), self.transform(self.items[positions], out=out), []
            return list(positions), self.transform(self.items[positions]), []
        return self._files(positions)

    def _files(self, positions: list[int]):
        """Decode the files at ``positions``; transform runs of consecutive images of one shape together (a
        folder's images mostly share one), each run at most :data:`RUN_VALUES` input values so that a chunk of
        large photos is not held, converted to float, all at once."""
        ok, failures, parts, run = [], [], [], []
        per_image = self.transform is None or getattr(self.transform, "keeps_shape", False)
        out = (batch_tensor(self.transform.output_shape(len(positions)), channels_last=True)
               if not per_image and hasattr(self.transform, "output_shape") else None)

        def flush() -> None:
            if not run:
                return
            kept, y, refused = self._each(run) if per_image else self._run(run, out, len(ok))
            ok.extend(kept)
            failures.extend(refused)
            if kept and out is None:
                parts.append(y)
            run.clear()

        for p in positions:
            a, reason = self.decode(self.items[p])
            if a is None:
                failures.append((p, reason, False))
                continue
            image = torch.from_numpy(np.require(a, requirements=['C', 'W']))
            if run and (per_image or image.shape != run[0][1].shape or (len(run) + 1) * image.numel() > RUN_VALUES):
                flush()
            run.append((p, image))
        flush()
        failures.sort()
        if not ok:
            return ok, [], failures
        if per_image:
            images = [image for part in parts for image in part]
            packed = getattr(self.transform, "keeps_shape", False)
            return ok, Packed.of(images) if packed else cat_rows([image[None] for image in images]), failures
        if out is not None:
            return ok, out[: len(ok)], failures
        return ok, cat_rows(parts), failures

    def _run(self, run: list[tuple[int, Tensor]], out: Tensor | None, at: int):
        """Transform a run of same-shaped images in one call (into ``out[at:]`` if given); where the transform
        refuses the run, find the images it refuses one by one (:meth:`_each`)."""
        try:
            x = torch.stack([image for _, image in run])
            y = self.transform(x) if out is None else self.transform(x, out=out[at: at + len(run)])
            return [p for p, _ in run], y, []
        except InputError:
            kept, each, refused = self._each(run)
            if not kept:
                return kept, None, refused
            if out is None:
                return kept, torch.stack(each), refused
            out[at: at + len(kept)] = torch.stack(each)
            return kept, None, refused

    def _each(self, run: list[tuple[int, Tensor]]):
        """Each image transformed on its own: the positions kept, their images, the refused ``(p, reason, True)``."""
        kept, out, refused = [], [], []
        for p, image in run:
            try:
                out.append(image if self.transform is None else self.transform(image[None])[0])
            except InputError as exc:
                refused.append((p, f"{self.items[p]}: {exc}", True))
                continue
            kept.append(p)
        return kept, out, refused


def batch_tensor(shape: tuple[int, ...], *, dtype: torch.dtype = torch.float32, channels_last: bool = False) -> Tensor:
    """``torch.empty(shape)`` (channels-last for a 4-d shape when asked), allocated in shared memory when
    called in a DataLoader worker: the batch then reaches the main process without the copy into shared
    memory that sending an ordinary tensor costs (what torch's default collate does for its batches)."""
    layout = torch.channels_last if channels_last else torch.contiguous_format
    if torch.utils.data.get_worker_info() is None:
        return torch.empty(shape, dtype=dtype, memory_format=layout)
    stride = torch.empty(shape, dtype=dtype, memory_format=layout, device="meta").stride()  # no allocation
    try:
        storage = torch.empty(0, dtype=dtype)._typed_storage()._new_shared(math.prod(shape))
    except (AttributeError, RuntimeError):  # a torch without this (private) route: an ordinary tensor
        return torch.empty(shape, dtype=dtype, memory_format=layout)
    return torch.empty(0, dtype=dtype).set_(storage, 0, shape, stride)


def cat_rows(parts: list[Tensor]) -> Tensor:
    """``torch.cat`` into :func:`batch_tensor` (shared memory in a worker), channels-last where the parts are."""
    first = parts[0]
    cl = first.dim() == 4 and first.shape[1] > 1 and first.is_contiguous(memory_format=torch.channels_last)
    shape = (sum(len(part) for part in parts), *first.shape[1:])
    return torch.cat(parts, out=batch_tensor(shape, dtype=first.dtype, channels_last=cl))


@dataclass
class Packed:
    """Images of different shapes sent from a worker as one flat tensor and their shapes: one shared-memory
    segment (one open file while received) per chunk instead of one per image."""

    flat: Tensor
    shapes: list[tuple[int, ...]]

    @classmethod
    def of(cls, images: list[Tensor]) -> Packed:
        flat = batch_tensor((sum(image.numel() for image in images),), dtype=images[0].dtype)
        return cls(torch.cat([image.reshape(-1) for image in images], out=flat), [tuple(im.shape) for im in images])

    def unpack(self) -> list[Tensor]:
        """The images, as views of ``flat``."""
        sizes = [math.prod(shape) for shape in self.shapes]
        return [part.view(shape) for part, shape in zip(self.flat.split(sizes), self.shapes)]


def as_is(chunk):
    return chunk


class Rebatcher:
    """Regroups chunks of readable samples into batches of exactly ``size``."""

    def __init__(self, size: int, labelled: bool):
        self.size, self.labelled, self.count = size, labelled, 0
        self.parts: list[tuple] = []
        self.held = 0

    def add(self, x, ids: np.ndarray, labels) -> Iterator[Batch]:
        self.parts.append((x, ids, labels))
        self.held += len(ids)
        while self.held >= self.size:
            yield self._take(self.size)

    def rest(self) -> Iterator[Batch]:
        if self.held:
            yield self._take(self.held)

    def _take(self, n: int) -> Batch:
        xs, ids, labels, need = [], [], [], n
        while need:
            x, i, y = self.parts[0]
            k = min(need, len(i))
            xs.append(x[:k])
            ids.append(i[:k])
            labels.append(None if y is None else y[:k])
            self.parts[0] = (x[k:], i[k:], None if y is None else y[k:])
            if k == len(i):
                self.parts.pop(0)
            need -= k
        self.held -= n
        self.count += n
        return Batch(join(xs), np.concatenate(ids), np.concatenate(labels) if self.labelled else None)


def join(xs: list):
    if isinstance(xs[0], list):
        return [a for x in xs for a in x]
    return xs[0] if len(xs) == 1 else torch.cat(xs)

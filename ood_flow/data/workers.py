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


@dataclass(frozen=True)
class Same:
    """A read that keeps each file's own shape (:meth:`Source.load`), or resizes it to ``size``."""

    size: tuple[int, int] | None = None
    keeps_shape = True

    def __call__(self, x: Tensor) -> Tensor:
        if self.size is None or tuple(x.shape[-2:]) == self.size:
            return x
        from ood_flow.data.conform import resize_images

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
        ok, images, failures = [], [], []
        for p in positions:
            a, reason = self.decode(self.items[p])
            if a is None:
                failures.append((p, reason, False))
                continue
            images.append(torch.from_numpy(np.require(a, requirements=['C', 'W'])))
            ok.append(p)
        if self.transform is None or getattr(self.transform, "keeps_shape", False):
            kept, images, refused = self._each(ok, images)
        else:
            kept, images, refused = self._grouped(ok, images)
        failures = sorted(failures + refused)
        if not kept:
            return kept, [], failures
        if getattr(self.transform, "keeps_shape", False):
            return kept, Packed.of(images), failures
        return kept, images if isinstance(images, Tensor) else stack_images(images), failures

    def _each(self, ok: list[int], images: list[Tensor]):
        """Each image transformed on its own: the positions kept, their images, the refused ``(p, reason, True)``."""
        kept, out, refused = [], [], []
        for p, image in zip(ok, images):
            try:
                out.append(image if self.transform is None else self.transform(image[None])[0])
            except InputError as exc:
                refused.append((p, f"{self.items[p]}: {exc}", True))
                continue
            kept.append(p)
        return kept, out, refused

    def _grouped(self, ok: list[int], images: list[Tensor]):
        """The transform run once per group of images of one shape (a folder's images mostly share one),
        written into one batch in position order; as :meth:`_each`, which finds the refused images of a
        group the transform refuses."""
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, image in enumerate(images):
            groups.setdefault(tuple(image.shape), []).append(i)
        shaped = hasattr(self.transform, "output_shape")
        if len(groups) == 1 and shaped:  # the common case: straight into the batch sent to the main process
            try:
                x = torch.stack(images)
                return ok, self.transform(x, out=batch_tensor(self.transform.output_shape(len(ok)),
                                                              channels_last=True)), []
            except InputError:
                return self._each(ok, images)
        parts, refused = [], []
        for members in groups.values():
            try:
                parts.append((members, self.transform(torch.stack([images[i] for i in members]))))
            except InputError:
                kept, each, bad = self._each([ok[i] for i in members], [images[i] for i in members])
                refused += bad
                good = {p: i for i, p in zip(members, [ok[i] for i in members])}
                if kept:
                    parts.append(([good[p] for p in kept], torch.stack(each)))
        order = sorted(i for members, _ in parts for i in members)
        if not order:
            return [], [], refused
        first = parts[0][1]
        cl = first.dim() == 4 and first.shape[1] > 1 and first.is_contiguous(memory_format=torch.channels_last)
        out = batch_tensor((len(order), *first.shape[1:]), dtype=first.dtype, channels_last=cl)
        rank = {i: r for r, i in enumerate(order)}
        for members, y in parts:
            out[torch.tensor([rank[i] for i in members])] = y
        return [ok[i] for i in order], out, refused


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


def stack_images(images: list[Tensor]) -> Tensor:
    """``torch.stack`` into :func:`batch_tensor` (shared memory in a worker), in channels-last memory format
    when the images are laid out so (the embedding transform writes them so for the backbone)."""
    first = images[0]
    cl = first.dim() == 3 and first.shape[0] > 1 and first.stride(0) == 1
    return torch.stack(images, out=batch_tensor((len(images), *first.shape), dtype=first.dtype, channels_last=cl))


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

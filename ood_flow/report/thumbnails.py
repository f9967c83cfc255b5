"""Thumbnails of the samples a score ranks worst and best, found again from a score group's provenance.

A score group records its ``source`` (``mnist:test from ...``, a folder, an array file) and each
sample's ``id`` (a file path, or the row index in the source). Images are looked up from those: a
file that still exists is read directly; a named dataset or array file is loaded again (never
downloaded) and its rows matched by id. Where that fails, the strip carries one line saying why.
"""

from __future__ import annotations

import base64
import io
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ood_flow.data import load_source
from ood_flow.data.images import IMAGE_SUFFIXES, decode_image
from ood_flow.errors import OodflowError

_NOTES = re.compile(r"(\s\[[^\]]*\])+$")  # " [limit 5000]", " [class 3]", " [converted ...]"


@dataclass
class Thumb:
    """One thumbnail: a PNG data URI, the sample's id and its score."""

    uri: str
    id: str
    score: float


@dataclass
class Strip:
    """Thumbnails of one group, or the reason there are none."""

    group: str
    caption: str
    thumbs: list[Thumb] = field(default_factory=list)
    missing: str | None = None


def make_strip(group: str, caption: str, arrays: dict, attrs: dict, score: str, k: int, *, lowest: bool,
               data_dir=None) -> Strip:
    """The ``k`` samples of a group with the lowest (or highest) ``score``, as thumbnails."""
    strip = Strip(group, caption)
    if "id" not in arrays:
        strip.missing = f"images of {group} not shown: the score file holds no sample ids"
        return strip
    values = np.asarray(arrays[score], dtype=np.float64)
    order = np.argsort(values, kind="stable")
    chosen = (order if lowest else order[::-1])[:k]
    ids = [str(i) for i in np.asarray(arrays["id"])[chosen]]
    try:
        images = find_images(attrs.get("source", ""), ids, data_dir)
    except OodflowError as exc:
        strip.missing = f"images of {group} not shown: {_one_line(exc)}"
        return strip
    strip.thumbs = [Thumb(png_uri(im), i, float(values[c])) for im, i, c in zip(images, ids, chosen, strict=True)]
    return strip


def find_images(source: str, ids: list[str], data_dir=None) -> list[np.ndarray]:
    """The images ``(C, H, W)`` uint8 of the samples ``ids`` of a group scored from ``source``.

    Raises:
        OodflowError: the images cannot be found (moved files, a dataset not under the data root,
            feature vectors rather than images); the message says which.
    """
    if ids and all(Path(i).suffix.lower() in IMAGE_SUFFIXES for i in ids):  # image files: read just those
        found = [_existing_file(i, source) for i in ids]
        gone = [i for i, p in zip(ids, found, strict=True) if p is None]
        if gone:
            raise OodflowError(f"{len(gone)} of the {len(ids)} image files are no longer there (e.g. {gone[0]})")
        return [decode_image(p) for p in found]
    spec = source_spec(source)
    if not spec:
        raise OodflowError("the score group records no source")
    ds = _load_again(spec, source, data_dir)
    if ds.kind != "image":
        raise OodflowError(f"the source {spec!r} holds feature vectors, not images")
    row = {str(i): n for n, i in enumerate(ds.ids)}
    lost = [i for i in ids if i not in row]
    if lost:
        raise OodflowError(f"sample {lost[0]!r} is no longer in {spec!r}")
    return [ds.x[row[i]].numpy() for i in ids]


def source_spec(source: str) -> str:
    """The SOURCE text that loads a group's data again, from its recorded provenance.

    Example:
        >>> source_spec("mnist:test from /data/MNIST/raw/t10k-images-idx3-ubyte.gz [limit 100]")
        'mnist:test'
    """
    text = _NOTES.sub("", source.strip())
    head = text.rpartition(":")[0]
    if os.path.lexists(text) or (head and os.path.isfile(head)):
        return text
    return text.split(" from ", 1)[0]


def _load_again(spec: str, source: str, data_dir):
    """Load ``spec`` under ``data_dir`` (the usual root), else under the root it was loaded from."""
    error = None
    for root in [data_dir, *_recorded_roots(source)]:
        try:
            return load_source(spec, data_dir=root, download=False)
        except OodflowError as exc:
            error = error or exc
    raise OodflowError(f"cannot load the source {spec!r} again ({_one_line(error)})")


def _recorded_roots(source: str) -> list[Path]:
    """Folders above the file a named dataset was read from (``mnist:test from ROOT/MNIST/raw/...``)."""
    _, sep, rest = _NOTES.sub("", source.strip()).partition(" from ")
    where = Path(rest.split(" (")[0]) if sep else None
    if where is None or not where.exists():
        return []
    return list(where.parents)[:3]


def png_uri(image: np.ndarray) -> str:
    """A ``data:image/png;base64,...`` URI of a ``(C, H, W)`` uint8 image (C = 1 or 3)."""
    a = np.asarray(image, dtype=np.uint8)
    pil = Image.fromarray(a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0))
    buffer = io.BytesIO()
    pil.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _existing_file(sample_id: str, source: str) -> Path | None:
    """The image file of ``sample_id`` if it is a path that still exists (also relative to the source folder)."""
    path = Path(sample_id)
    if path.is_file():
        return path
    base = Path(_NOTES.sub("", source.strip()))
    base = base if base.is_dir() else base.parent
    for start in range(len(path.parts)):  # "data/imgs/a.png" scored as folder /abs/data/imgs
        candidate = base.joinpath(*path.parts[start:])
        if candidate.is_file():
            return candidate
    return None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__

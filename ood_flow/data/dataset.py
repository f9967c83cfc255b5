"""The in-memory dataset every source becomes, and the array checks all loaders share.

Images are kept as uint8 ``(N, C, H, W)`` with ``C`` in {1, 3}: the 8-bit values are
what the flow's likelihood is defined on, so no loader rescales them. Vectors are
float32 ``(N, D)`` and must be finite.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ood_flow.errors import InputError


@dataclass
class Dataset:
    """Samples from one source, ready for preprocessing.

    Attributes:
        x: images as uint8 ``(N, C, H, W)``, C in {1, 3}; or vectors as float32 ``(N, D)``.
        ids: ``(N,)`` str: the file path for image files, ``"<index>"`` for rows of a
            dataset or array (the row's index in the source, before any selection).
        labels: ``(N,)`` int64 where known, else None.
        kind: ``"image"`` or ``"vector"``.
        name: default score-group name (``"mnist-test"``, a folder name, a file stem).
        source: canonical description of where the samples came from (provenance).
        skipped: ``(path, reason)`` of inputs skipped because ``skip_invalid=True``.
        label_names: name of each label value where known (``label_names[k]`` names k).
        meta: attributes of the file the samples came from where they matter downstream: for a
            features file written by ``oodflow embed``, its backbone, transform and provenance.
    """

    x: torch.Tensor
    ids: np.ndarray
    labels: np.ndarray | None
    kind: str
    name: str
    source: str
    skipped: list[tuple[str, str]] = field(default_factory=list)
    label_names: list[str] | None = None
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one sample: ``(C, H, W)`` for images, ``(D,)`` for vectors."""
        return tuple(self.x.shape[1:])


@dataclass(frozen=True)
class LoadRequest:
    """What a named-dataset loader is asked for (see ``ood_flow.data.registry``)."""

    root: Path
    split: str
    limit: int | None = None
    download: bool = True
    skip_invalid: bool = False


def row_ids(n: int, start: int = 0) -> np.ndarray:
    """Ids ``"0", "1", ...`` for the rows of a dataset or array."""
    return np.arange(start, start + n).astype(str)


def take(ds: Dataset, keep: np.ndarray | slice) -> Dataset:
    """The samples of ``ds`` selected by ``keep`` (a boolean mask, indices or a slice)."""
    index = torch.as_tensor(keep) if isinstance(keep, np.ndarray) else keep
    labels = None if ds.labels is None else ds.labels[keep]
    return dataclasses.replace(ds, x=ds.x[index], ids=ds.ids[keep], labels=labels)


def first(ds: Dataset, limit: int | None) -> Dataset:
    """The first ``limit`` samples of ``ds`` (all of them when ``limit`` is None)."""
    if limit is None or limit >= len(ds):
        return ds
    return take(ds, slice(0, limit))


def select_class(ds: Dataset, value: str) -> Dataset:
    """The samples whose label equals ``value`` (a label number or a label name)."""
    out = take(ds, class_mask(ds.name, ds.labels, ds.label_names, value))
    return dataclasses.replace(out, source=f"{ds.source} [class {value}]")


def class_mask(name: str, labels: np.ndarray | None, label_names: list[str] | None, value: str) -> np.ndarray:
    """Which samples have label ``value`` (a label number or a label name); raises if none or no labels."""
    if labels is None:
        raise InputError(f"{name}: cannot select class {value!r}: the source has no labels")
    code = _label_code(name, label_names, value)
    keep = labels == code
    if not keep.any():
        present = ", ".join(str(v) for v in np.unique(labels)[:20])
        raise InputError(f"{name}: no sample has label {value!r}; labels present: {present}")
    return keep


def _label_code(name: str, label_names: list[str] | None, value: str) -> int | None:
    if label_names is not None and value in label_names:
        return label_names.index(value)
    try:
        number = float(value)
    except ValueError:
        names = ", ".join(label_names or [])
        raise InputError(
            f"{name}: class {value!r} is not a label number" + (f" or one of: {names}" if names else "")
        ) from None
    return int(number) if number == int(number) else None


def check_count(n: int, where: str) -> None:
    """Raise if a source holds no samples at all."""
    if n == 0:
        raise InputError(f"{where} holds no samples")


def to_vectors(a: np.ndarray, where: str) -> torch.Tensor:
    """Check a ``(N, D)`` numeric array and return it as float32 (finite values only)."""
    if a.dtype.kind not in "biuf":
        raise InputError(f"{where}: feature values must be numbers, found dtype {a.dtype}")
    x = np.asarray(a, dtype=np.float32)
    check_count(len(x), where)
    bad = ~np.isfinite(x)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise InputError(f"{where}: non-finite value {x[row, col]} at row {row}, column {col}")
    return _tensor(x)


def to_images(a: np.ndarray, where: str) -> torch.Tensor:
    """Turn an image array into uint8 ``(N, C, H, W)``.

    Accepts ``(N, H, W)``, ``(N, H, W, C)`` or ``(N, C, H, W)`` with C in {1, 3}
    (channels-last wins when both readings fit). Integer values must lie in 0..255;
    float values in [0, 1] are scaled by 255 and rounded, and float values that are
    whole numbers in 0..255 are taken as they are.
    """
    a = _channels_first(a, where)
    check_count(len(a), where)
    return _tensor(_to_uint8(a, where))


def _tensor(a: np.ndarray) -> torch.Tensor:
    a = np.ascontiguousarray(a)
    return torch.from_numpy(a if a.flags.writeable else a.copy())


def _channels_first(a: np.ndarray, where: str) -> np.ndarray:
    if a.ndim == 3:
        return a[:, None]
    if a.ndim == 4 and a.shape[3] in (1, 3):
        return a.transpose(0, 3, 1, 2)
    if a.ndim == 4 and a.shape[1] in (1, 3):
        return a
    raise InputError(
        f"{where}: an array of shape {tuple(a.shape)} is neither vectors (N, D) nor images "
        "(N, H, W), (N, H, W, C) or (N, C, H, W) with C in 1, 3"
    )


def _to_uint8(a: np.ndarray, where: str) -> np.ndarray:
    if a.dtype == np.uint8:
        return a
    if a.dtype.kind not in "biuf":
        raise InputError(f"{where}: image values must be numbers, found dtype {a.dtype}")
    if a.size == 0:
        return a.astype(np.uint8)
    lo, hi = a.min(), a.max()
    if a.dtype.kind in "biu":
        if lo < 0 or hi > 255:
            raise InputError(f"{where}: integer image values must lie in 0..255, found {lo}..{hi}")
        return a.astype(np.uint8)
    if not np.isfinite(a).all():
        raise InputError(f"{where}: image values include NaN or inf")
    if lo >= 0 and hi <= 1:
        return np.rint(a * 255.0).astype(np.uint8)
    if lo >= 0 and hi <= 255 and np.array_equal(a, np.rint(a)):
        return a.astype(np.uint8)
    raise InputError(
        f"{where}: float image values must lie in [0, 1] (scaled by 255) or be whole numbers "
        f"in 0..255, found {lo:g}..{hi:g}"
    )

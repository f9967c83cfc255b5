"""Array files: ``.npy``, ``.npz`` and HDF5 (``oodflow embed`` features or an ``images`` dataset).

A 2-d array is a set of feature vectors; a 3-d or 4-d array is a set of images (see
:func:`ood_flow.data.dataset.to_images`). Nothing is unpickled: object arrays are refused.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import h5py
import numpy as np

from ood_flow import store
from ood_flow.data.dataset import Dataset, row_ids, to_images, to_vectors
from ood_flow.errors import InputError

NPZ_DATA_KEYS = ("x", "images", "features", "data", "x32")
LABEL_KEYS = ("y", "label", "labels")
_NOT_DATA = set(LABEL_KEYS) | {"ids", "id"}
_NPY_ERRORS = (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError)


def samples_from_array(a: np.ndarray, where: str, *, images: bool | None = None):
    """``(x, kind)`` for an array: 2-d -> float32 vectors, else uint8 images."""
    if images is None:
        images = a.ndim != 2
    if images:
        return to_images(a, where), "image"
    if a.ndim != 2:
        raise InputError(f"{where}: feature vectors must be a 2-d array (N, D), found shape {tuple(a.shape)}")
    return to_vectors(a, where), "vector"


def _labels(y: np.ndarray | None, n_total: int, limit: int | None, where: str) -> np.ndarray | None:
    if y is None:
        return None
    y = np.asarray(y)
    whole = y.dtype.kind in "iub" or (y.dtype.kind == "f" and np.array_equal(y, np.rint(y)))
    if y.ndim != 1 or len(y) != n_total or not whole:
        raise InputError(f"{where}: labels must be {n_total} whole numbers, found shape {y.shape} dtype {y.dtype}")
    return y[:limit].astype(np.int64)


def _dataset(a, y, where, name, source, *, ids=None, images=None, label_names=None, meta=None) -> Dataset:
    x, kind = samples_from_array(a, where, images=images)
    ids = row_ids(len(x)) if ids is None else ids
    return Dataset(x=x, ids=ids, labels=y, kind=kind, name=name, source=source, label_names=label_names,
                   meta=meta or {})


def load_npy(path: Path, *, limit: int | None) -> Dataset:
    """A ``.npy`` array (memory-mapped, so ``limit`` reads only the rows it keeps)."""
    try:
        a = np.load(path, mmap_mode="r", allow_pickle=False)
        a = np.array(a[:limit] if a.ndim else a)
    except _NPY_ERRORS as exc:
        raise InputError(f"cannot read {path}: {_why(exc)}") from None
    return _dataset(a, None, str(path), path.stem, str(path.resolve()))


def load_npz(path: Path, *, key: str | None, limit: int | None) -> Dataset:
    """An array of a ``.npz`` file, with labels from ``y``/``label``/``labels`` if present.

    The array is ``key`` if given, else the first of ``NPZ_DATA_KEYS`` present (``x32``
    is the 32x32 array of the shared CelebA sample), else the only array that is not
    labels or ids.
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            chosen = _npz_key(z.files, key, path)
            a = np.atleast_1d(z[chosen])
            y_key = next((k for k in LABEL_KEYS if k in z.files), None)
            y = None if y_key is None else z[y_key]
    except _NPY_ERRORS as exc:
        raise InputError(f"cannot read {path}: {_why(exc)}") from None
    where = f"{path}:{chosen}"
    labels = _labels(y, len(a), limit, where)
    name = path.stem if key is None else f"{path.stem}-{key}"
    return _dataset(a[:limit], labels, where, name, f"{path.resolve()}:{chosen}")


def _npz_key(files: list[str], key: str | None, path: Path) -> str:
    if key is not None:
        if key not in files:
            raise InputError(f"{path} has no array {key!r}; arrays: {', '.join(files)}")
        return key
    for k in NPZ_DATA_KEYS:
        if k in files:
            return k
    candidates = [k for k in files if k not in _NOT_DATA]
    if len(candidates) == 1:
        return candidates[0]
    raise InputError(
        f"{path}: cannot tell which array holds the data (arrays: {', '.join(files) or 'none'}); "
        f"name one as {path}:KEY"
    )


def _why(exc: BaseException) -> str:
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, zipfile.BadZipFile):
        return "not a valid npz (zip) file, or truncated"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if "allow_pickle" in text:
        return "it holds Python objects, which are not loaded (pickle is unsafe)"
    return text


def load_h5(path: Path, *, key: str | None, limit: int | None) -> Dataset:
    """A features file (its layout: :mod:`ood_flow.store`) or an ``images`` dataset of an HDF5 file.

    ``key`` names another dataset at the root (or below it). A file with groups and
    neither dataset is taken to be a score file and refused with that reason.
    """
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        reason = "permission denied" if isinstance(exc, PermissionError) else "not an HDF5 file, or truncated"
        raise InputError(f"cannot read {path}: {reason}") from None
    with f:
        chosen = _h5_key(f, key, path)
        d = f[chosen]
        n_total = d.shape[0] if d.shape else 0
        a = d[:limit]
        ids = _h5_ids(f, n_total, limit, path) if chosen == "features" else None
        y = f["label"][()] if chosen == "features" and "label" in f else None
        names = _h5_label_names(f)
        meta = store.features_attrs(f) if chosen == "features" else {}
    where = f"{path}:{chosen}"
    labels = _labels(y, n_total, limit, where)
    images = {"images": True, "features": False}.get(chosen)
    name = path.stem if key is None else f"{path.stem}-{key}"
    source = f"{path.resolve()}:{chosen}"
    return _dataset(a, labels, where, name, source, ids=ids, images=images, label_names=names, meta=meta)


def _h5_key(f: h5py.File, key: str | None, path: Path) -> str:
    if key is not None:
        if key not in f:
            raise InputError(f"{path} has no dataset {key!r}; found: {', '.join(f.keys()) or 'nothing'}")
        if not isinstance(f[key], h5py.Dataset):
            raise InputError(f"{path}:{key} is a group, not a dataset")
        return key
    for k in ("features", "images"):
        if k in f and isinstance(f[k], h5py.Dataset):
            return k
    groups = [k for k in f if isinstance(f[k], h5py.Group)]
    if groups:
        raise InputError(f"{path} is a score file, not a data source (groups: {', '.join(groups[:10])})")
    raise InputError(f"{path} has no 'features' or 'images' dataset (found: {', '.join(f.keys()) or 'nothing'})")


def _h5_ids(f: h5py.File, n_total: int, limit: int | None, path: Path) -> np.ndarray | None:
    if "id" not in f:
        return None
    d = f["id"]
    if d.shape != (n_total,):
        raise InputError(f"{path}: 'id' has shape {d.shape} but 'features' has {n_total} rows")
    values = d.asstr()[:limit] if h5py.check_string_dtype(d.dtype) else d[:limit]
    return np.asarray(values).astype(str)


def _h5_label_names(f: h5py.File) -> list[str] | None:
    names = f.attrs.get("label_names")
    if names is None:
        return None
    return [n.decode() if isinstance(n, bytes) else str(n) for n in np.atleast_1d(names)]

"""HDF5 score files and features files.

A score file holds one group per scored source; plain h5py, pandas or MATLAB
read it without oodflow (no pickled objects)::

    /                          oodflow_format="scores", oodflow_format_version=1
    /<source>/                 provenance attributes (source, model, model_sha256, method, seed, ...)
    /<source>/log_likelihood   float (N,)    nats per sample, higher = more in-distribution
    /<source>/bits_per_dim     float (N,)
    /<source>/log_prior        float (N,)
    /<source>/log_det          float (N,)
    /<source>/id               variable-length UTF-8 strings (N,): file paths or dataset indices
    /<source>/label            int (N,), where known
    /<source>/is_ood           bool (N,), once a gate was applied
    /<source>/p_value          float (N,), the conformal p-value of each sample against the gate's calibration

A features file (written by ``oodflow embed``, a SOURCE like any other; files end in
``.h5`` or ``.hdf5``) holds root datasets and provenance attributes::

    /                          oodflow_format="features", oodflow_format_version=1, provenance
                               (source, backbone, weights, image_size, mean, std, ...)
    /features                  float32 (N, d)
    /id                        variable-length UTF-8 strings (N,)
    /label                     int (N,), where known

Attribute values and per-sample arrays are converted as :mod:`ood_flow.hdf5`
describes (a dict attribute is stored as JSON and read back as a dict).

Every write goes through :func:`ood_flow.fileio.atomic_write`: the new content
is built in a temporary file beside the target (a copy of the existing file
when adding to it), flushed and renamed into place. A failure, KeyboardInterrupt
or kill at any point leaves the existing file byte-identical. Concurrent writers
take turns: the whole read-modify-replace runs under the file's lock, so two
processes adding different groups to one file both land.

Every problem with a file (missing, not HDF5, truncated, not ours, missing
group or dataset) raises :class:`ScoreFileError` with a one-line message that
starts with the file name as given. Bad arguments (unequal lengths, bad names,
unstorable types) raise ``ValueError``.
"""

from __future__ import annotations

import os
import shutil
from typing import Any, Mapping

import h5py
import numpy as np

from ood_flow import hdf5
from ood_flow.errors import AlreadyExists, ScoreFileError
from ood_flow.fileio import Kind, atomic_write, check_output, file_lock

FORMAT_ATTR, VERSION_ATTR, FORMAT_VERSION = hdf5.FORMAT_ATTR, hdf5.VERSION_ATTR, hdf5.FORMAT_VERSION
RESERVED_ATTRS = (FORMAT_ATTR, VERSION_ATTR)
NOT_SCORES = ("id", "label", "is_ood", "p_value")  # per-sample datasets that are not scores (p_value: the gate's)
FEATURES_SUFFIXES = (".h5", ".hdf5")


def _is_oodflow_file(kind: str):
    def test(path) -> bool:
        try:
            with h5py.File(path, "r") as f:
                return hdf5.to_py(f.attrs.get(FORMAT_ATTR)) == kind
        except Exception:  # noqa: BLE001 - any unreadable file is simply not of this kind
            return False

    return test


SCORE_FILE = Kind("an oodflow score file", _is_oodflow_file("scores"))
FEATURES_FILE = Kind("an oodflow features file", _is_oodflow_file("features"))


# ---------------------------------------------------------------- public API


def write_group(path, name: str, arrays: Mapping[str, Any], attrs: Mapping[str, Any], *,
                overwrite: bool = False) -> None:
    """Create the score file ``path`` or add the group ``name`` to it, atomically.

    Args:
        path: the score file; created if absent.
        name: group name (the scored source), non-empty, without '/'.
        arrays: per-sample arrays, all of the same length N; ``id`` is stored as strings.
        attrs: provenance attributes of the group.
        overwrite: replace an existing group of that name (in its place; the file is
            rewritten so the old group's space is reclaimed).
    """
    hdf5.check_name(name, "group")
    data = hdf5.prepare_arrays(arrays)
    packed = hdf5.pack_attrs(attrs, RESERVED_ATTRS)
    with file_lock(path):
        replace = _has_group(path, name)
        if replace and not overwrite:
            raise AlreadyExists(f"{os.fspath(path)}: group '{name}'")
        with atomic_write(path, kind=SCORE_FILE, replaceable=True) as tmp:
            if replace:
                with hdf5.open_file(path, "scores", reading=False) as src, h5py.File(tmp, "w", track_order=True) as dst:
                    _repack(src, dst, name, data, packed)
            elif os.path.exists(path):
                shutil.copy2(os.path.realpath(path), tmp)
                with h5py.File(tmp, "r+") as f:
                    _create_group(f, name, data, packed)
            else:
                with h5py.File(tmp, "w", track_order=True) as f:
                    _mark(f, "scores")
                    _create_group(f, name, data, packed)


def _has_group(path, name: str) -> bool:
    """Whether the score file ``path`` (if it exists) holds group ``name``; any other file is refused."""
    if not os.path.lexists(path):
        return False
    with hdf5.open_file(path, "scores") as f:
        return name in _group_names(f)


def check_score_output(path, name: str, *, overwrite: bool = False) -> None:
    """Fail before any work if group ``name`` could not be written to ``path`` (the write checks again, locked)."""
    hdf5.check_name(name, "group")
    if _has_group(path, name) and not overwrite:
        raise AlreadyExists(f"{os.fspath(path)}: group '{name}'")
    check_output(path, kind=SCORE_FILE, replaceable=True)


def add_datasets(path, name: str, arrays: Mapping[str, Any], attrs: Mapping[str, Any] | None = None,
                 *, overwrite: bool = False) -> None:
    """Add per-sample datasets (e.g. ``is_ood``) and attributes to an existing group, atomically.

    Arrays must have the group's length N. An existing dataset or attribute of the
    same name is an error unless ``overwrite``.
    """
    data = hdf5.prepare_arrays(arrays, allow_empty=True)
    packed = hdf5.pack_attrs(attrs, RESERVED_ATTRS)
    shown = os.fspath(path)
    with file_lock(path):
        with hdf5.open_file(path, "scores") as f:
            group = _get_group(f, shown, name)
            n = _group_length(group)
            clashes = [f"dataset '{k}'" for k in data if k in group]
            clashes += [f"attribute '{k}'" for k in packed[0] if k in group.attrs]
        if clashes and not overwrite:
            raise AlreadyExists(f"{shown}: {clashes[0]} of group '{name}'")
        wrong = {k: len(a) for k, a in data.items() if n is not None and len(a) != n}
        if wrong:
            raise ValueError(f"group '{name}' has {n} samples but got arrays of length {wrong}")
        with atomic_write(path, kind=SCORE_FILE, replaceable=True) as tmp:
            shutil.copy2(os.path.realpath(path), tmp)
            with h5py.File(tmp, "r+") as f:
                for key, a in data.items():
                    if key in f[name]:
                        del f[name][key]
                    _write_dataset(f[name], key, a)
                _set_attrs(f[name], packed)


def read_group(path, name: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """All datasets of group ``name`` (string datasets as ``str`` arrays) and its attributes."""
    with hdf5.open_file(path, "scores") as f:
        group = _get_group(f, os.fspath(path), name)
        arrays = {k: hdf5.read_dataset(ds) for k, ds in group.items() if isinstance(ds, h5py.Dataset)}
        return arrays, hdf5.unpack_attrs(group.attrs)


def list_groups(path) -> list[str]:
    """Group names in creation order (files written by oodflow track it), else in name order."""
    with hdf5.open_file(path, "scores") as f:
        return _group_names(f)


def read_scores(path, name: str, score: str = "log_likelihood") -> np.ndarray:
    """One per-sample score of group ``name``, as stored (reads only that dataset)."""
    shown = os.fspath(path)
    with hdf5.open_file(path, "scores") as f:
        group = _get_group(f, shown, name)
        present = score_names(group)
        if score not in present:
            listed = ", ".join(present) or "(none)"
            raise ScoreFileError(f"{shown}: group '{name}' has no score '{score}'; scores present: {listed}")
        return group[score][()]


def score_names(group: h5py.Group) -> list[str]:
    """Names of the numeric per-sample datasets of an open group that are scores (not id/label/is_ood)."""
    return [k for k, ds in group.items()
            if isinstance(ds, h5py.Dataset) and ds.ndim == 1 and ds.dtype.kind in "iuf" and k not in NOT_SCORES]


def write_features(path, features, *, ids, labels=None, attrs: Mapping[str, Any], overwrite: bool = False) -> None:
    """Write a features file atomically (``features`` (N, d) float32, ``id``, ``label``).

    An existing features file is replaced only with ``overwrite``; any other existing file never.
    """
    x = np.asarray(features)
    if x.ndim != 2:
        raise ValueError(f"features must be 2-D (N, d), got shape {x.shape}")
    arrays = {"features": x.astype(np.float32, copy=False), "id": ids}
    if labels is not None:
        arrays["label"] = labels
    data = hdf5.prepare_arrays(arrays)
    packed = hdf5.pack_attrs(attrs, RESERVED_ATTRS)
    with atomic_write(path, overwrite=overwrite, kind=FEATURES_FILE) as tmp, \
            h5py.File(tmp, "w", track_order=True) as f:
        _mark(f, "features")
        for key, a in data.items():
            _write_dataset(f, key, a)
        _set_attrs(f, packed)


def is_features_file(path) -> bool:
    """Whether ``path`` is an existing oodflow features file."""
    try:
        with hdf5.open_file(path, "features"):
            return True
    except ScoreFileError:
        return False


def read_features(path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Datasets (``features``, ``id``, ``label`` if present) and attributes of a features file."""
    with hdf5.open_file(path, "features") as f:
        arrays = {k: hdf5.read_dataset(ds) for k, ds in f.items() if isinstance(ds, h5py.Dataset)}
        attrs = hdf5.unpack_attrs(f.attrs)
    for key in (FORMAT_ATTR, VERSION_ATTR):
        attrs.pop(key, None)
    return arrays, attrs


def features_attrs(f: h5py.File) -> dict[str, Any]:
    """The attributes of an open features file (backbone, transform, provenance); ``{}`` for other HDF5 files."""
    if hdf5.to_py(f.attrs.get(FORMAT_ATTR)) != "features":
        return {}
    attrs = hdf5.unpack_attrs(f.attrs)
    for key in (FORMAT_ATTR, VERSION_ATTR):
        attrs.pop(key, None)
    return attrs


# ---------------------------------------------------------------- groups


def _group_names(f: h5py.Group) -> list[str]:
    """Names of the groups at the root, in iteration order (creation order when tracked)."""
    return [k for k in f
            if not isinstance(f.get(k, getlink=True), h5py.ExternalLink) and isinstance(f.get(k), h5py.Group)]


def _get_group(f: h5py.File, shown: str, name: str) -> h5py.Group:
    groups = _group_names(f)
    if name not in groups:
        raise ScoreFileError(f"{shown}: no group '{name}'; groups present: {', '.join(groups) or '(none)'}")
    return f[name]


def _group_length(group: h5py.Group) -> int | None:
    for ds in group.values():
        if isinstance(ds, h5py.Dataset) and ds.ndim >= 1:
            return len(ds)
    return None


# ---------------------------------------------------------------- writing


def _mark(f: h5py.File, kind: str) -> None:
    f.attrs[FORMAT_ATTR] = kind
    f.attrs[VERSION_ATTR] = FORMAT_VERSION


def _create_group(f: h5py.Group, name: str, data: dict[str, np.ndarray], packed) -> None:
    group = f.create_group(name, track_order=True)
    for key, a in data.items():
        _write_dataset(group, key, a)
    _set_attrs(group, packed)


def _repack(src: h5py.File, dst: h5py.File, name: str, data, packed) -> None:
    """Copy ``src`` into ``dst`` with group ``name`` replaced in its place (reclaims the old group's space)."""
    for key, value in src.attrs.items():
        dst.attrs[key] = value
    for key in src:
        if key == name:
            _create_group(dst, name, data, packed)
        else:
            src.copy(src[key], dst, name=key)


def _write_dataset(group: h5py.Group, key: str, a: np.ndarray) -> None:
    if a.dtype.kind == "O":
        group.create_dataset(key, data=a, dtype=hdf5.STR)
    else:
        group.create_dataset(key, data=a)


def _set_attrs(obj, packed) -> None:
    values, as_json = packed
    for key, value in values.items():
        obj.attrs[key] = value
    previous = set(hdf5.to_py(obj.attrs.get(hdf5.JSON_ATTRS, [])))
    names = sorted((previous - set(values)) | set(as_json))
    if names:
        obj.attrs[hdf5.JSON_ATTRS] = np.array(names, dtype=hdf5.STR)
    elif hdf5.JSON_ATTRS in obj.attrs:
        del obj.attrs[hdf5.JSON_ATTRS]

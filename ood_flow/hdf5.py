"""The HDF5 layer under oodflow's score and features files (their layout: :mod:`ood_flow.store`).

Opening: :func:`open_file` opens an oodflow file of a kind read-only, and every failure (missing,
not HDF5, truncated, another kind, a newer format) becomes a one-line ScoreFileError.

Values: per-sample arrays are numbers, bools, or strings (stored as variable-length UTF-8; every ``id`` is
a string). Attributes may be str, int, float, bool, lists of str or of numbers; anything else
JSON-serialisable (a dict, None, nested lists) is stored as a JSON string and its name listed in
the attribute :data:`JSON_ATTRS`, so reading gives back the dict.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any, Iterator, Mapping

import h5py
import numpy as np

from ood_flow.errors import ScoreFileError

FORMAT_ATTR = "oodflow_format"
VERSION_ATTR = "oodflow_format_version"
FORMAT_VERSION = 1
KIND_WORDS = {"scores": "score file", "features": "features file"}
JSON_ATTRS = "oodflow_json_attrs"
STR = h5py.string_dtype("utf-8")


@contextlib.contextmanager
def open_file(path, kind: str, reading: bool = True) -> Iterator[h5py.File]:
    """Open an oodflow file of ``kind`` read-only; every failure becomes a one-line ScoreFileError.

    With ``reading``, h5py errors raised in the body (damaged data) are converted too; a body
    that also writes elsewhere passes False so that, say, a full disk is not reported as a
    corrupt source.
    """
    shown = os.fspath(path)
    if not os.path.exists(path):
        raise ScoreFileError(f"{shown}: no such file")
    if os.path.isdir(path):
        raise ScoreFileError(f"{shown}: is a directory, not a file")
    if not os.access(path, os.R_OK):
        raise ScoreFileError(f"{shown}: permission denied")
    try:
        f = h5py.File(path, "r")
    except (OSError, RuntimeError):
        raise ScoreFileError(f"{shown}: not an HDF5 file (or truncated)") from None
    try:
        try:
            check_format(f, shown, kind)
        except (OSError, RuntimeError):
            raise ScoreFileError(f"{shown}: unreadable HDF5 data (file truncated or corrupt)") from None
        if not reading:
            yield f
            return
        try:
            yield f
        except (OSError, RuntimeError) as e:  # h5py's errors when reading damaged data
            raise ScoreFileError(f"{shown}: unreadable HDF5 data (file truncated or corrupt)") from e
    finally:
        f.close()


def check_format(f: h5py.File, shown: str, kind: str) -> None:
    fmt, version = to_py(f.attrs.get(FORMAT_ATTR)), to_py(f.attrs.get(VERSION_ATTR))
    ours = isinstance(fmt, str) and fmt in KIND_WORDS
    if not ours or not isinstance(version, int) or isinstance(version, bool):
        raise ScoreFileError(f"{shown}: not an oodflow {KIND_WORDS[kind]}")
    if fmt != kind:
        raise ScoreFileError(f"{shown}: an oodflow {KIND_WORDS[fmt]}, not a {KIND_WORDS[kind]}")
    if version > FORMAT_VERSION:
        raise ScoreFileError(f"{shown}: {KIND_WORDS[kind]} format version {version} is newer than this "
                             f"oodflow reads ({FORMAT_VERSION}); upgrade oodflow")


def check_name(name: Any, what: str) -> None:
    if not isinstance(name, str) or not name or "/" in name or name == "." or "\x00" in name:
        raise ValueError(f"invalid {what} name {name!r}: must be a non-empty string without '/'")


def prepare_arrays(arrays: Mapping[str, Any], allow_empty: bool = False) -> dict[str, np.ndarray]:
    """Validate names, convert to storable arrays and check that all lengths agree."""
    if not arrays and not allow_empty:
        raise ValueError("no arrays to write")
    data = {}
    for key, value in arrays.items():
        check_name(key, "dataset")
        data[key] = as_storable(key, value)
    lengths = {k: len(a) for k, a in data.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"per-sample arrays must have the same length, got {lengths}")
    return data


def as_storable(key: str, value: Any) -> np.ndarray:
    """Numbers and bools as they are; strings (and every ``id``) as an object array of str."""
    a = np.asarray(value)
    if a.ndim == 0:
        raise ValueError(f"dataset '{key}': expected a per-sample array, got a scalar")
    if a.dtype.kind == "S":
        a = np.char.decode(a, "utf-8")
    if key == "id" and a.dtype.kind not in "UO":
        a = a.astype(str)  # dataset indices become strings: one type for every id
    if a.dtype.kind in "UO":
        a = a.astype(object)
        if not all(isinstance(v, str) and "\x00" not in v for v in a.flat):
            raise ValueError(f"dataset '{key}': an object array must hold only strings (without NUL)")
        return a
    if a.dtype.kind not in "biufc":
        raise ValueError(f"dataset '{key}': cannot store dtype {a.dtype}")
    return a


def pack_attrs(attrs: Mapping[str, Any] | None, reserved: tuple[str, ...] = ()) -> tuple[dict[str, Any], list[str]]:
    """Attribute values h5py stores natively, and the names of those stored as JSON."""
    values, as_json = {}, []
    for key, value in (attrs or {}).items():
        check_name(key, "attribute")
        if key == JSON_ATTRS or key in reserved:
            raise ValueError(f"attribute name '{key}' is reserved")
        values[key], is_json = attr_value(key, value)
        if is_json:
            as_json.append(key)
    return values, as_json


def attr_value(key: str, value: Any) -> tuple[Any, bool]:
    if isinstance(value, (np.generic, np.ndarray)):
        value = value.tolist()
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, (str, bool, int, float)):
        return value, False
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return np.array(list(value), dtype=STR), False
    if isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return np.asarray(value), False
    try:
        return json.dumps(value), True
    except (TypeError, ValueError):
        raise ValueError(f"attribute '{key}': cannot store a {type(value).__name__}") from None


def read_dataset(ds: h5py.Dataset) -> np.ndarray:
    if h5py.check_string_dtype(ds.dtype) is not None:
        return ds.asstr()[()].astype(str)
    return ds[()]


def unpack_attrs(h5attrs) -> dict[str, Any]:
    as_json = set(to_py(h5attrs.get(JSON_ATTRS, [])))
    out = {}
    for key in h5attrs:
        if key != JSON_ATTRS:
            value = to_py(h5attrs[key])
            out[key] = json.loads(value) if key in as_json else value
    return out


def to_py(value: Any) -> Any:
    """h5py attribute values as plain Python: str, int, float, bool, lists."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray):
        return [to_py(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    return value

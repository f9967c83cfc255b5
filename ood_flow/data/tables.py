"""CSV tables: a header row, then one sample per row of numeric feature columns."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np

from ood_flow.data.dataset import Dataset, check_count, row_ids, to_vectors
from ood_flow.errors import InputError

_ENCODING = "utf-8-sig"


def read_header(path: Path) -> list[str]:
    """The column names of a CSV file (first row, stripped of spaces and a leading '#')."""
    try:
        with open(path, newline="", encoding=_ENCODING) as f:
            row = next(csv.reader(f), None)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"cannot read {path}: {_why(exc)}") from None
    if not row:
        raise InputError(f"{path} is empty: a CSV source needs a header row")
    return [name.strip().lstrip("#").strip() for name in row]


def _why(exc: BaseException) -> str:
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, UnicodeDecodeError):
        return "not a UTF-8 text file"
    return str(exc) or type(exc).__name__


def read_numbers(path: Path, header: list[str], usecols: list[int], limit: int | None = None) -> np.ndarray:
    """The float64 values of columns ``usecols`` of every data row (the first ``limit`` rows).

    Raises:
        InputError: naming the row and column of the first cell that is not a
            number, or is NaN or infinite.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "input contained no data"
            a = np.loadtxt(path, delimiter=",", skiprows=1, usecols=usecols, ndmin=2, comments=None,
                           quotechar='"', max_rows=limit, encoding=_ENCODING, dtype=np.float64)
    except ValueError:
        _locate_bad_cell(path, header, usecols, limit)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {_why(exc)}") from None
    bad = ~np.isfinite(a)
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise InputError(f"{path}: {_cell(row, header[usecols[col]])} is {a[row, col]} (NaN and inf are not allowed)")
    return a


def _cell(row: int, column: str) -> str:
    return f"row {row + 1} (line {row + 2}), column {column!r}"


def _locate_bad_cell(path: Path, header: list[str], usecols: list[int], limit: int | None) -> None:
    """Find the cell np.loadtxt refused and raise an InputError that names it."""
    with open(path, newline="", encoding=_ENCODING) as f:
        rows = csv.reader(f)
        next(rows, None)
        for row, fields in enumerate(rows):
            if limit is not None and row >= limit:
                break
            if len(fields) <= max(usecols):
                raise InputError(f"{path}: line {row + 2} has {len(fields)} fields but the header has {len(header)}")
            for col in usecols:
                try:
                    float(fields[col])
                except ValueError:
                    raise InputError(
                        f"{path}: {_cell(row, header[col])}: {fields[col]!r} is not a number"
                    ) from None
    raise InputError(f"{path}: cannot parse the numeric columns as CSV")


def read_labels(path: Path, col: int, limit: int | None = None) -> tuple[np.ndarray, list[str] | None]:
    """Labels from column ``col``: whole numbers as they are, anything else as categories.

    Categories (strings, or numbers that are not whole) are numbered in sorted
    order of their text; the second value returned is that list of names.
    """
    raw = np.loadtxt(path, delimiter=",", skiprows=1, usecols=[col], ndmin=1, comments=None,
                     quotechar='"', max_rows=limit, encoding=_ENCODING, dtype=str)
    raw = np.char.strip(np.atleast_1d(raw))
    try:
        values = raw.astype(np.float64)
        if np.isfinite(values).all() and (values == np.rint(values)).all():
            return values.astype(np.int64), None
    except ValueError:
        pass
    names, codes = np.unique(raw, return_inverse=True)
    return codes.astype(np.int64), [str(n) for n in names]


def load_csv(path: Path, *, columns: list[str] | None, label_column: str | None,
             limit: int | None) -> Dataset:
    """Feature vectors from a CSV file with a header row.

    Args:
        path: the file.
        columns: feature columns by name (default: every column but ``label_column``).
        label_column: a column to use as labels (dropped from the features).
        limit: read only the first ``limit`` rows.
    """
    header = read_header(path)
    names = _feature_names(path, header, columns, label_column)
    usecols = [header.index(n) for n in names]
    x = to_vectors(read_numbers(path, header, usecols, limit), str(path))
    labels, label_names = (None, None)
    if label_column is not None:
        labels, label_names = read_labels(path, header.index(label_column), limit)
    check_count(len(x), str(path))
    source = f"{path.resolve()} [columns {','.join(names)}" + (f"; label {label_column}]" if label_column else "]")
    return Dataset(x=x, ids=row_ids(len(x)), labels=labels, kind="vector", name=path.stem,
                   source=source, label_names=label_names)


def _feature_names(path: Path, header: list[str], columns: list[str] | None,
                   label_column: str | None) -> list[str]:
    wanted = list(columns) if columns else [h for h in header if h != label_column]
    if label_column is not None:
        wanted = [c for c in wanted if c != label_column]
    missing = [c for c in wanted + ([label_column] if label_column else []) if c not in header]
    if missing:
        raise InputError(f"{path} has no column {missing[0]!r}; columns: {', '.join(header)}")
    if not wanted:
        raise InputError(f"{path}: no feature columns left (columns: {', '.join(header)})")
    return wanted

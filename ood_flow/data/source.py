"""One grammar for every subcommand's SOURCE argument.

A SOURCE is, in this order of precedence:

- an existing path: a folder of images (recursive, sorted by path), one image file,
  an array file (``.npy``, ``.npz``), an HDF5 file (``oodflow embed`` features, or an
  ``images`` dataset) or a ``.csv`` table;
- ``FILE.npz:KEY`` or ``FILE.h5:KEY``: one named array of such a file;
- ``NAME[:SPLIT]``: a dataset of :data:`ood_flow.data.DATASETS` under the data root.

:func:`open_source` opens one for reading in batches (image files decoded as they are read, see
:mod:`ood_flow.data.stream`); :func:`load_source` reads it whole.
"""

from __future__ import annotations

import os
from pathlib import Path

from ood_flow.data.arrays import load_h5, load_npy, load_npz
from ood_flow.data.dataset import Dataset, LoadRequest, class_mask, first, select_class
from ood_flow.data.download import default_data_root
from ood_flow.data.images import IMAGE_SUFFIXES, file_source, folder_source
from ood_flow.data.registry import DATASETS, get_entry, resolve_split
from ood_flow.data.stream import Source, replace
from ood_flow.data.tables import load_csv
from ood_flow.errors import InputError

_KEYED_SUFFIXES = (".npz", ".h5", ".hdf5")
_FILE_SUFFIXES = IMAGE_SUFFIXES + (".npy", ".csv") + _KEYED_SUFFIXES


def load_source(
    spec: str,
    *,
    split: str = "train",
    data_dir: str | os.PathLike | None = None,
    limit: int | None = None,
    skip_invalid: bool = False,
    download: bool = True,
    columns: list[str] | None = None,
    label_column: str | None = None,
    class_value: str | None = None,
    image_size: tuple[int, int] | None = None,
) -> Dataset:
    """Load a SOURCE (see the module docstring) whole, as a :class:`Dataset`.

    Takes the arguments of :func:`open_source`; a folder's images must then share one size.

    Example:
        >>> ds = load_source("demo-mnist:test", limit=10)
        >>> ds.x.shape, ds.name
        (torch.Size([10, 1, 28, 28]), 'demo-mnist-test')
    """
    return open_source(spec, split=split, data_dir=data_dir, limit=limit, skip_invalid=skip_invalid,
                       download=download, columns=columns, label_column=label_column, class_value=class_value,
                       image_size=image_size).load()


def open_source(
    spec: str,
    *,
    split: str = "train",
    data_dir: str | os.PathLike | None = None,
    limit: int | None = None,
    skip_invalid: bool = False,
    download: bool = True,
    columns: list[str] | None = None,
    label_column: str | None = None,
    class_value: str | None = None,
    image_size: tuple[int, int] | None = None,
) -> Source:
    """Open a SOURCE (see the module docstring) for reading in batches; image files are decoded as read.

    Args:
        spec: the SOURCE text.
        split: the split of a named dataset when ``spec`` names none; a dataset with
            one split (``notmnist``) uses that one instead.
        data_dir: the data root for named datasets (see :func:`default_data_root`).
        limit: keep the first ``limit`` samples, in the source's order (files: readable ones).
        skip_invalid: skip unreadable image files (listed in ``skipped``) instead of failing.
        download: fetch a missing named dataset where the network and the root allow.
        columns: CSV feature columns by name (default: all but ``label_column``).
        label_column: CSV column holding the labels; dropped from the features.
        class_value: keep only samples with this label (a number or a label name),
            before ``limit`` is applied.
        image_size: (height, width) at which :meth:`Source.load` reads a folder's images, resizing
            each image of another size (so a folder of mixed sizes loads); other sources ignore it.

    Returns:
        The source; ``name`` is the default score-group name and ``source`` the provenance text.

    Raises:
        InputError: a one-line reason, naming the file or dataset at fault.

    Example:
        >>> src = open_source("demo-mnist:test", limit=300)
        >>> [len(b) for b in src.batches(128)]
        [128, 128, 44]
    """
    if limit is not None and limit < 1:
        raise InputError(f"limit must be at least 1, got {limit}")
    path, key = _as_path(spec)
    if (columns or label_column) and (path is None or path.suffix.lower() != ".csv"):
        raise InputError(f"{spec}: --columns and --label-column apply to CSV sources only")
    inner_limit = None if class_value is not None else limit
    if path is None:
        src = _load_named(spec, split, data_dir, inner_limit, skip_invalid, download)
    else:
        src = _load_path(path, key, inner_limit, skip_invalid, columns, label_column, image_size)
    src = src if isinstance(src, Source) else Source.from_dataset(src)
    if class_value is not None:
        src = _select_class(src, str(class_value))
    src = _first(src, limit)
    if limit is not None:
        src.source = f"{src.source} [limit {limit}]"
    return src


def _select_class(src: Source, value: str) -> Source:
    if src.in_memory:
        return Source.from_dataset(select_class(src.load(), value))
    keep = class_mask(src.name, src.labels, src.label_names, value)
    items = [p for p, k in zip(src.items, keep) if k]
    return replace(src, items=items, ids=src.ids[keep], labels=src.labels[keep], source=f"{src.source} [class {value}]")


def _first(src: Source, limit: int | None) -> Source:
    if limit is None:
        return src
    if src.in_memory:
        return Source.from_dataset(first(src.load(), limit))
    return replace(src, limit=limit)


def _as_path(spec: str) -> tuple[Path | None, str | None]:
    """``(path, key)`` when ``spec`` is an existing path or ``FILE.npz:KEY``; else ``(None, None)``."""
    if not spec:
        raise InputError("empty SOURCE: give a folder, a file or a dataset name")
    path = Path(spec).expanduser()
    if os.path.lexists(path):
        return path, None
    head, sep, key = spec.rpartition(":")
    if sep and head and key:
        head_path = Path(head).expanduser()
        if head_path.is_file() and head_path.suffix.lower() in _KEYED_SUFFIXES:
            return head_path, key
    return None, None


def _load_path(path: Path, key: str | None, limit: int | None, skip_invalid: bool,
               columns: list[str] | None, label_column: str | None,
               image_size: tuple[int, int] | None) -> Dataset | Source:
    if not path.exists():
        raise InputError(f"cannot read {path}: broken link")
    if not os.access(path, os.R_OK | (os.X_OK if path.is_dir() else 0)):
        raise InputError(f"cannot read {path}: permission denied")
    if path.is_dir():
        return folder_source(path, limit=limit, skip_invalid=skip_invalid, size=image_size)
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return file_source(path)
    if suffix == ".npy":
        return load_npy(path, limit=limit)
    if suffix == ".npz":
        return load_npz(path, key=key, limit=limit)
    if suffix in (".h5", ".hdf5"):
        return load_h5(path, key=key, limit=limit)
    if suffix == ".csv":
        return load_csv(path, columns=columns, label_column=label_column, limit=limit)
    raise InputError(
        f"{path} is not a supported file; use a folder of images or a file ending in {', '.join(_FILE_SUFFIXES)}"
    )


def _load_named(spec: str, default_split: str, data_dir, limit: int | None, skip_invalid: bool,
                download: bool) -> Dataset | Source:
    name, sep, split = spec.partition(":")
    if name.lower() not in DATASETS:
        if _looks_like_path(spec):
            raise InputError(f"no such file or folder: {spec}")
        raise InputError(f"unknown dataset {name!r} (and no file or folder {spec!r}); datasets: {', '.join(DATASETS)}")
    entry = get_entry(name)
    chosen = resolve_split(entry, split if sep and split else None, default_split)
    root = default_data_root(data_dir)
    request = LoadRequest(root=root, split=chosen, limit=limit, download=download, skip_invalid=skip_invalid)
    return entry.loader(request)


def _looks_like_path(spec: str) -> bool:
    return any(c in spec for c in "/\\") or spec.startswith((".", "~")) or spec.lower().endswith(_FILE_SUFFIXES)

"""Image files and folders of image files, decoded with PIL one file at a time as they are read."""

from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from ood_flow.data.stream import Decoder, Source
from ood_flow.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
_GRAY_MODES = {"1", "L", "LA"}
_WIDE_GRAY_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N"}


def is_image_file(path: Path) -> bool:
    """True for a file whose suffix (any case) is one of ``IMAGE_SUFFIXES``."""
    return path.suffix.lower() in IMAGE_SUFFIXES


def list_images(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursive), sorted by path.

    Other files are ignored, and so are hidden files and folders (a name starting
    with ".", such as ``.ipynb_checkpoints`` copies or macOS ``._`` files).
    """
    found = [p for p in folder.rglob("*") if is_image_file(p) and not _hidden(p, folder) and p.is_file()]
    return sorted(found, key=lambda p: p.as_posix())


def _hidden(path: Path, folder: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(folder).parts)


def decode_image(path: Path) -> np.ndarray:
    """Decode one image file to uint8 ``(C, H, W)``, C = 1 for grayscale, 3 otherwise.

    Alpha is dropped; palette images whose colours are all grey stay one channel;
    16-bit grayscale is scaled to 8 bits.

    Raises:
        InputError: the file cannot be read or is not a complete image.
    """
    a, reason = read_image(path)
    if a is None:
        raise InputError(f"cannot read image {path}: {reason}")
    return a


def read_image(path: Path) -> tuple[np.ndarray | None, str]:
    """``(uint8 (C, H, W), "")`` for a readable image file, else ``(None, reason)`` (see :func:`decode_image`)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                return _pixels(img), ""
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombWarning,
            Image.DecompressionBombError) as exc:
        return None, _reason(exc)


def _pixels(img: Image.Image) -> np.ndarray:
    if img.mode in _GRAY_MODES:
        return np.asarray(img.convert("L"))[None]
    if img.mode in _WIDE_GRAY_MODES:
        a = np.asarray(img).astype(np.float64)
        return np.rint(a * (255.0 / 65535.0)).clip(0, 255).astype(np.uint8)[None]
    rgb = np.asarray(img.convert("RGB")).transpose(2, 0, 1)
    if img.mode == "P" and (rgb[0] == rgb[1]).all() and (rgb[1] == rgb[2]).all():
        return np.ascontiguousarray(rgb[:1])
    return rgb


def _reason(exc: BaseException) -> str:
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    text = str(exc).splitlines()[0] if str(exc) else ""
    filename = str(getattr(exc, "filename", None) or "")
    if filename:  # the caller names the file: drop it and the quotes and colon left around it
        text = text.replace(filename, "").strip(" :'\"")
    return text.strip() or type(exc).__name__


def files_source(paths: list[Path], *, where: str, name: str, source: str, limit: int | None,
                 skip_invalid: bool, labels: np.ndarray | None = None, label_names: list[str] | None = None,
                 decode: Decoder = read_image) -> Source:
    """Image files read on demand, in the given order (see :class:`~ood_flow.data.stream.Source`)."""
    return Source(items=list(paths), ids=np.array([str(p) for p in paths], dtype=str), labels=labels, kind="image",
                  name=name, source=source, label_names=label_names, decode=decode, limit=limit,
                  skip_invalid=skip_invalid, where=where)


def folder_source(folder: Path, *, limit: int | None, skip_invalid: bool,
                  size: tuple[int, int] | None = None) -> Source:
    """All images under ``folder`` (recursive, sorted by path), decoded as they are read; with ``size``
    (height, width), :meth:`Source.load` resizes each image of another size to it (bilinear with
    antialiasing, as :func:`~ood_flow.data.pixels.resize_images`), so a folder of mixed sizes loads."""
    paths = list_images(folder)
    if not paths:
        raise InputError(
            f"folder {folder} contains no images ({', '.join(s[1:] for s in IMAGE_SUFFIXES)})"
        )
    note = f" [images read at {size[1]}x{size[0]}]" if size is not None else ""
    src = files_source(paths, where=f"folder {folder}", name=folder.resolve().name,
                       source=str(folder.resolve()) + note, limit=limit, skip_invalid=skip_invalid)
    return dataclasses.replace(src, read_size=None if size is None else tuple(size))


def file_source(path: Path) -> Source:
    """One image file as a source of one sample; an unreadable file is always an error."""
    source = files_source([path], where=str(path), name=path.stem, source=str(path.resolve()), limit=None,
                          skip_invalid=False)
    return dataclasses.replace(source, skip_hint=False)


LIST_NAME = "files"
"""The name of a source made of several SOURCEs, unless the caller names it."""


def list_source(entries, *, limit: int | None, skip_invalid: bool, name: str | None = None) -> Source:
    """Image files and folders given as a list (several SOURCE arguments, ``-`` on stdin, ``--files-from``) as
    one source, in the order given, a folder's images in :func:`folder_source`'s order. Each sample's id is
    its path as :func:`folder_source` writes it, so an image scores the same from a folder, a list or alone.

    Raises:
        InputError: a data file (arrays, tables) or a missing file among them (a missing file is skipped
            with ``skip_invalid``, as an unreadable one is), a folder without images, or no entries.
    """
    paths: list[Path] = []
    for entry in entries:
        path = Path(entry).expanduser()
        if path.is_dir():
            found = list_images(path)
            if not found:
                raise InputError(f"folder {path} contains no images ({', '.join(s[1:] for s in IMAGE_SUFFIXES)})")
            paths += found
        elif path.suffix.lower() in _DATA_SUFFIXES:
            raise InputError(f"{path}: a list of SOURCEs takes image files and folders; give {path} on its own")
        elif not os.path.lexists(path) and not skip_invalid:
            raise InputError(f"no such file: {path} (pass --skip-invalid to skip missing and unreadable files)")
        else:
            paths.append(path)
    if not paths:
        raise InputError("no image files given (the list is empty)")
    shown = ", ".join(str(e) for e in list(entries)[:3]) + (", ..." if len(entries) > 3 else "")
    return files_source(paths, where="the list of files", name=name or LIST_NAME,
                        source=f"{len(paths)} image files from {len(entries)} SOURCEs ({shown})", limit=limit,
                        skip_invalid=skip_invalid)


_DATA_SUFFIXES = (".npy", ".npz", ".h5", ".hdf5", ".csv")

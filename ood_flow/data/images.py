"""Image files and folders of image files, decoded with PIL one file at a time."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ood_flow.data.dataset import Dataset
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
    a, reason = _try_decode(path)
    if a is None:
        raise InputError(f"cannot read image {path}: {reason}")
    return a


def _try_decode(path: Path) -> tuple[np.ndarray | None, str]:
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
    text = text.replace(filename, "") if filename else text
    return text.strip(" :'\"") or type(exc).__name__


def load_image_files(
    paths: list[Path], where: str, *, limit: int | None, skip_invalid: bool, size: tuple[int, int] | None = None
) -> tuple[torch.Tensor, list[str], list[tuple[str, str]]]:
    """Decode ``paths`` in order until ``limit`` images are read.

    All images must share one height and width, unless ``size`` (height, width) is given: then each
    image of another size is resized to it as it is read (bilinear with antialiasing, as
    :func:`~ood_flow.data.conform.resize_images`), so a folder of mixed sizes loads. Grayscale images
    are repeated to three channels when any image is in colour.

    Returns:
        ``(x, ids, skipped)``: uint8 ``(N, C, H, W)``, the path of each image, and
        ``(path, reason)`` for files skipped because ``skip_invalid`` is set.
    """
    arrays, ids, skipped = [], [], []
    for path in paths:
        if limit is not None and len(arrays) >= limit:
            break
        a, reason = _try_decode(path)
        if a is None:
            if not skip_invalid:
                raise InputError(f"cannot read image {path}: {reason}; pass --skip-invalid to skip such files")
            skipped.append((str(path), reason))
            continue
        if size is not None and a.shape[1:] != tuple(size):
            a = _resized(a, size)
        _check_size(a, arrays, path, ids)
        arrays.append(a)
        ids.append(str(path))
    if not arrays:
        first_bad = f", first: {skipped[0][0]}: {skipped[0][1]}" if skipped else ""
        raise InputError(f"{where}: no readable images ({len(skipped)} skipped{first_bad})")
    return _stack(arrays), ids, skipped


def _resized(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from ood_flow.data.conform import resize_images

    return resize_images(torch.from_numpy(a)[None], size)[0].numpy()


def _check_size(a: np.ndarray, arrays: list[np.ndarray], path: Path, ids: list[str]) -> None:
    if arrays and a.shape[1:] != arrays[0].shape[1:]:
        h0, w0 = arrays[0].shape[1:]
        h, w = a.shape[1:]
        raise InputError(
            f"images differ in size: {path} is {w}x{h} but {ids[0]} is {w0}x{h0} (width x height); "
            "make them one size first"
        )


def _stack(arrays: list[np.ndarray]) -> torch.Tensor:
    channels = max(a.shape[0] for a in arrays)
    if channels == 3:
        arrays = [np.repeat(a, 3, axis=0) if a.shape[0] == 1 else a for a in arrays]
    return torch.from_numpy(np.stack(arrays))


def load_folder(folder: Path, *, limit: int | None, skip_invalid: bool, size: tuple[int, int] | None = None) -> Dataset:
    """All images under ``folder`` (recursive, sorted by path) as one dataset; with ``size``
    (height, width), images of other sizes are resized to it as they are read."""
    paths = list_images(folder)
    if not paths:
        raise InputError(
            f"folder {folder} contains no images ({', '.join(s[1:] for s in IMAGE_SUFFIXES)})"
        )
    x, ids, skipped = load_image_files(paths, f"folder {folder}", limit=limit, skip_invalid=skip_invalid, size=size)
    note = f" [images read at {size[1]}x{size[0]}]" if size is not None else ""
    return Dataset(
        x=x, ids=np.array(ids, dtype=str), labels=None, kind="image",
        name=folder.resolve().name, source=str(folder.resolve()) + note, skipped=skipped,
    )


def load_image_file(path: Path) -> Dataset:
    """One image file as a dataset of one sample."""
    x = torch.from_numpy(np.array(decode_image(path)[None]))
    return Dataset(
        x=x, ids=np.array([str(path)], dtype=str), labels=None, kind="image",
        name=path.stem, source=str(path.resolve()),
    )

"""Named image datasets in torchvision's folder layout: the MNIST family, SVHN and CelebA.

Files are read where they lie (a read-only root works); only a download writes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from PIL import Image

from ood_flow.data.dataset import Dataset, LoadRequest, row_ids, to_images
from ood_flow.data.download import ensure, missing_error
from ood_flow.data.idx import read_idx_pair
from ood_flow.data.images import files_source, list_images, read_image
from ood_flow.data.stream import Source
from ood_flow.errors import InputError

DIGITS = [str(d) for d in range(10)]
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
LETTERS = list("ABCDEFGHIJ")
_IDX_PREFIX = {"train": "train", "test": "t10k"}


def _download_mnist(root: Path) -> None:
    from torchvision.datasets import MNIST

    MNIST(str(root), download=True)


def _download_fashionmnist(root: Path) -> None:
    from torchvision.datasets import FashionMNIST

    FashionMNIST(str(root), download=True)


def _download_svhn(root: Path, split: str) -> None:
    from torchvision.datasets import SVHN

    SVHN(str(root / "svhn"), split=split, download=True)


def _download_celeba(root: Path, split: str) -> None:
    from torchvision.datasets import CelebA

    CelebA(str(root), split={"val": "valid"}.get(split, split), download=True)


# Downloaders by dataset name; tests replace entries to stay off the network.
DOWNLOADERS = {
    "mnist": lambda root, split: _download_mnist(root),
    "fashionmnist": lambda root, split: _download_fashionmnist(root),
    "svhn": _download_svhn,
    "celeba": _download_celeba,
}


def _idx_file(raw: Path, stem: str) -> Path | None:
    """The extracted IDX file if present, else its ``.gz``, else None."""
    for candidate in (raw / stem, raw / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _idx_images(name: str, folder: str, req: LoadRequest, label_names: list[str]) -> Dataset:
    raw = req.root / folder / "raw"
    stems = [f"{_IDX_PREFIX[req.split]}-{kind}" for kind in ("images-idx3-ubyte", "labels-idx1-ubyte")]
    files = [f"{p}-{k}.gz" for p in ("train", "t10k") for k in ("images-idx3-ubyte", "labels-idx1-ubyte")]
    error = missing_error(name, req.root, raw, files)
    downloader = DOWNLOADERS.get(name)
    ensure(lambda: all(_idx_file(raw, s) for s in stems), error, root=req.root, download=req.download,
           downloader=downloader and (lambda: downloader(req.root, req.split)))
    images, labels = (_idx_file(raw, s) for s in stems)
    x, y = read_idx_pair(images, labels, limit=req.limit)
    return Dataset(
        x=to_images(x, str(images)), ids=row_ids(len(x)), labels=y, kind="image",
        name=f"{name}-{req.split}", source=f"{name}:{req.split} from {images}", label_names=label_names,
    )


def load_mnist(req: LoadRequest) -> Dataset:
    """MNIST (LeCun et al. 1998) from ``ROOT/MNIST/raw/*-ubyte[.gz]``."""
    return _idx_images("mnist", "MNIST", req, DIGITS)


def load_fashionmnist(req: LoadRequest) -> Dataset:
    """Fashion-MNIST (Xiao et al. 2017) from ``ROOT/FashionMNIST/raw/*-ubyte[.gz]``."""
    return _idx_images("fashionmnist", "FashionMNIST", req, FASHION_CLASSES)


def load_notmnist(req: LoadRequest) -> Dataset | Source:
    """notMNIST test letters A-J (labels 0-9).

    From ``ROOT/notMNIST/raw/t10k-{images-idx3,labels-idx1}-ubyte[.gz]`` (the
    notMNIST-to-MNIST conversion), else from the notMNIST_small layout
    ``ROOT/notMNIST/<A..J>/*.png``. notMNIST_small is known to hold a few unreadable
    files, so that layout always skips them and lists them in ``skipped``.
    """
    base = req.root / "notMNIST"
    raw = base / "raw"
    if _idx_file(raw, "t10k-images-idx3-ubyte") and _idx_file(raw, "t10k-labels-idx1-ubyte"):
        return _idx_images("notmnist", "notMNIST", req, LETTERS)
    if all((base / letter).is_dir() for letter in LETTERS):
        return _notmnist_folders(base, req)
    raise missing_error("notmnist", req.root, raw, ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"],
                        f" or notMNIST_small's letter folders A..J in {base}/; no download exists for notMNIST")


def _notmnist_folders(base: Path, req: LoadRequest) -> Source:
    paths = [p for letter in LETTERS for p in list_images(base / letter)]
    labels = np.array([LETTERS.index(p.parent.name) for p in paths], dtype=np.int64)
    return files_source(paths, where=f"folder {base}", name=f"notmnist-{req.split}", limit=req.limit,
                        source=f"notmnist:{req.split} from {base}", skip_invalid=True, labels=labels,
                        label_names=LETTERS)


def load_svhn(req: LoadRequest) -> Dataset:
    """SVHN cropped digits (Netzer et al. 2011) from ``ROOT/svhn/{split}_32x32.mat``; label 10 -> 0."""
    folder = req.root / "svhn"
    path = folder / f"{req.split}_32x32.mat"
    error = missing_error("svhn", req.root, folder, [path.name])
    ensure(path.is_file, error, root=req.root, download=req.download,
           downloader=lambda: DOWNLOADERS["svhn"](req.root, req.split))
    mat = _loadmat(path)
    x = np.transpose(mat["X"], (3, 2, 0, 1))[: req.limit]  # (H, W, C, N) -> (N, C, H, W)
    y = mat["y"].reshape(-1)[: req.limit].astype(np.int64) % 10
    return Dataset(x=to_images(x, str(path)), ids=row_ids(len(x)), labels=y, kind="image",
                   name=f"svhn-{req.split}", source=f"svhn:{req.split} from {path}", label_names=DIGITS)


def _loadmat(path: Path) -> dict:
    try:
        from scipy.io import loadmat
    except ImportError:
        raise InputError(f"reading {path} needs scipy; install it with: pip install scipy") from None
    try:
        mat = loadmat(str(path))
    except (OSError, ValueError, TypeError) as exc:
        raise InputError(f"cannot read {path}: {exc} (corrupt or truncated?)") from None
    if "X" not in mat or "y" not in mat:
        raise InputError(f"{path} is not an SVHN file: it has no 'X' and 'y' arrays")
    return mat


CELEBA_CROP = 148
CELEBA_SIZE = 32
_CELEBA_PARTITION = {"train": "0", "val": "1", "test": "2"}


def load_celeba(req: LoadRequest) -> Dataset | Source:
    """CelebA faces (Liu et al. 2015) at 32x32: centre crop 148x148, then PIL bilinear resize.

    From torchvision's layout ``ROOT/celeba/img_align_celeba/*.jpg`` with
    ``ROOT/celeba/list_eval_partition.txt``; else the shared 32-image sample
    ``ROOT/CelebA/celeba_first32.npz`` (array ``x32``, made the same way), which holds
    training images only. CelebA is for non-commercial research only: never ship it.
    """
    folder = req.root / "celeba"
    partition = folder / "list_eval_partition.txt"
    sample = req.root / "CelebA" / "celeba_first32.npz"
    if not partition.is_file() and sample.is_file():
        return _celeba_sample(sample, req)
    error = missing_error("celeba", req.root, folder, ["img_align_celeba/", partition.name])
    ensure(partition.is_file, error, root=req.root, download=req.download,
           downloader=lambda: DOWNLOADERS["celeba"](req.root, req.split))
    names = _celeba_names(partition, req.split)[: req.limit]
    paths = [folder / "img_align_celeba" / n for n in names]
    if not paths:
        raise InputError(f"celeba:{req.split}: no readable images")
    source = files_source(paths, where=f"celeba:{req.split}", name=f"celeba-{req.split}", limit=None,
                          source=f"celeba:{req.split} from {folder} (centre crop 148, resize 32)",
                          skip_invalid=req.skip_invalid, decode=read_celeba)
    return dataclasses.replace(source, skip_hint=False)


def _celeba_names(partition: Path, split: str) -> list[str]:
    rows = [line.split() for line in partition.read_text().splitlines() if line.strip()]
    return [r[0] for r in rows if len(r) == 2 and r[1] == _CELEBA_PARTITION[split]]


def read_celeba(path: Path) -> tuple[np.ndarray | None, str]:
    """A CelebA file cropped and resized by :func:`celeba_crop`, or ``(None, reason)``."""
    a, reason = read_image(path)
    return (None, reason) if a is None else (celeba_crop(a), "")


def celeba_crop(a: np.ndarray, crop: int = CELEBA_CROP, size: int = CELEBA_SIZE) -> np.ndarray:
    """Centre-crop a uint8 ``(3, H, W)`` face to ``crop`` x ``crop`` and resize it (PIL bilinear)."""
    if a.shape[0] == 1:
        a = np.repeat(a, 3, axis=0)
    _, h, w = a.shape
    top, left = (h - crop) // 2, (w - crop) // 2
    img = Image.fromarray(np.ascontiguousarray(a.transpose(1, 2, 0)))
    img = img.crop((left, top, left + crop, top + crop)).resize((size, size), Image.BILINEAR)
    return np.ascontiguousarray(np.asarray(img).transpose(2, 0, 1))


def _celeba_sample(sample: Path, req: LoadRequest) -> Dataset:
    if req.split != "train":
        raise InputError(f"celeba: split {req.split!r} not found under {req.root}; the shared sample {sample} "
                         "holds 32 training images only (use celeba:train)")
    with np.load(sample, allow_pickle=False) as z:
        x = z["x32"][: req.limit]
    return Dataset(x=to_images(x, str(sample)), ids=row_ids(len(x)), labels=None, kind="image",
                   name="celeba-train", source=f"celeba:train from {sample} (sample: first 32 training images)")

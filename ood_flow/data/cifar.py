"""CIFAR-10 (Krizhevsky 2009): torchvision's ``cifar-10-batches-py`` pickles, or the shared samples.

The batches are Python pickles. They are read with an unpickler that builds only
numpy arrays, lists, dicts, bytes and strings, so a tampered file cannot run code.
"""

from __future__ import annotations

import codecs
import pickle
from pathlib import Path

import numpy as np

from ood_flow.data.dataset import Dataset, LoadRequest, row_ids, to_images
from ood_flow.data.download import ensure, missing_error
from ood_flow.errors import InputError

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
BATCH_FOLDER = "cifar-10-batches-py"
_BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
_SAMPLES = {"train": ("cifar10_train_first4000.npz", "first 4000 of the official training set"),
            "test": ("cifar10_test_first1000.npz", "first 1000 of the official test set")}


def _safe_globals() -> dict[tuple[str, str], object]:
    """The only globals a batch needs: numpy's array builders, and bytes from protocol-2 pickles."""
    reconstruct = np.ndarray(0).__reduce__()[0]
    frombuffer = np.ndarray(1).__reduce_ex__(5)[0]
    scalar = np.float64(0).__reduce__()[0]
    found = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype, ("_codecs", "encode"): codecs.encode}
    for core in ("numpy.core", "numpy._core"):
        found[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        found[(f"{core}.multiarray", "scalar")] = scalar
        found[(f"{core}.numeric", "_frombuffer")] = frombuffer
    return found


_SAFE_GLOBALS = _safe_globals()


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and plain containers; refuses every other global."""

    def find_class(self, module: str, name: str):
        if (module, name) in _SAFE_GLOBALS:
            return _SAFE_GLOBALS[(module, name)]
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 3, 32, 32)`` uint8 and labels ``(N,)`` int64 of one CIFAR-10 batch file."""
    try:
        with open(path, "rb") as f:
            batch = _ArrayUnpickler(f, encoding="latin1").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError) as exc:
        raise InputError(f"cannot read CIFAR-10 batch {path}: {exc or type(exc).__name__}") from None
    if not isinstance(batch, dict):
        raise InputError(f"{path} is not a CIFAR-10 batch (a dict with 'data' and 'labels')")
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    data, labels = batch.get("data"), batch.get("labels")
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3072 or labels is None:
        raise InputError(f"{path} is not a CIFAR-10 batch: expected 'data' (N, 3072) and 'labels'")
    if len(labels) != len(data):
        raise InputError(f"{path}: {len(data)} images but {len(labels)} labels")
    return data.reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.int64)


def _download(root: Path) -> None:
    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import download_and_extract_archive

    # Only the archive: torchvision's dataset class would unpickle the batches unrestricted.
    download_and_extract_archive(CIFAR10.url, str(root), filename=CIFAR10.filename, md5=CIFAR10.tgz_md5)


# Tests replace this to stay off the network.
DOWNLOADERS = {"cifar10": _download}


def load_cifar10(req: LoadRequest) -> Dataset:
    """CIFAR-10 ``train`` (50,000) or ``test`` (10,000) images, 3x32x32, labels 0-9.

    Reads ``ROOT/cifar-10-batches-py/``; if that is absent, the shared samples
    ``ROOT/CIFAR10/cifar10_train_first4000.npz`` / ``cifar10_test_first1000.npz``
    (``x`` (N, 32, 32, 3) uint8, ``y``), and says so in ``source``.
    """
    folder = req.root / BATCH_FOLDER
    paths = [folder / b for b in _BATCHES[req.split]]
    sample, what = _SAMPLES[req.split]
    sample = req.root / "CIFAR10" / sample
    if not all(p.is_file() for p in paths) and sample.is_file():
        return _from_sample(sample, what, req)
    error = missing_error("cifar10", req.root, folder, _BATCHES["train"] + _BATCHES["test"],
                          " (the contents of cifar-10-python.tar.gz)")
    ensure(lambda: all(p.is_file() for p in paths), error, root=req.root, download=req.download,
           downloader=lambda: DOWNLOADERS["cifar10"](req.root))
    xs, ys = [], []
    for path in paths:
        if req.limit is not None and sum(map(len, xs)) >= req.limit:
            break
        x, y = read_batch(path)
        xs.append(x)
        ys.append(y)
    x, y = np.concatenate(xs)[: req.limit], np.concatenate(ys)[: req.limit]
    return Dataset(x=to_images(x, str(folder)), ids=row_ids(len(x)), labels=y, kind="image",
                   name=f"cifar10-{req.split}", source=f"cifar10:{req.split} from {folder}",
                   label_names=CIFAR10_CLASSES)


def _from_sample(sample: Path, what: str, req: LoadRequest) -> Dataset:
    try:
        with np.load(sample, allow_pickle=False) as z:
            x, y = z["x"][: req.limit], z["y"][: req.limit].astype(np.int64)
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"cannot read {sample}: {exc}") from None
    return Dataset(x=to_images(x, str(sample)), ids=row_ids(len(x)), labels=y, kind="image",
                   name=f"cifar10-{req.split}", source=f"cifar10:{req.split} from {sample} (sample: {what})",
                   label_names=CIFAR10_CLASSES)

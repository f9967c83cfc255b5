"""The registry of named datasets: ``DATASETS[name]`` says which splits exist and how to load them."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np

from ood_flow.data.cifar import load_cifar10
from ood_flow.data.dataset import Dataset, LoadRequest, row_ids, to_images
from ood_flow.data.maf import load_hepmass, load_miniboone
from ood_flow.data.stream import Source
from ood_flow.data.vision import (DIGITS, FASHION_CLASSES, LETTERS, load_celeba, load_fashionmnist,
                                  load_mnist, load_notmnist, load_svhn)
from ood_flow.errors import InputError


@dataclass(frozen=True)
class DatasetEntry:
    """A named dataset.

    Attributes:
        name: the name used on the command line.
        loader: builds the :class:`Dataset` (rows in memory) or the
            :class:`~ood_flow.data.stream.Source` (files read on demand) for a :class:`LoadRequest`.
        splits: the valid splits; the first is the default where the caller's
            default split does not exist and there is only one.
        kind: ``"image"`` or ``"vector"``.
        description: one line for listings.
        note: said after the list of valid splits in a split error.
    """

    name: str
    loader: Callable[[LoadRequest], Dataset | Source]
    splits: tuple[str, ...]
    kind: str
    description: str
    note: str = ""


SAMPLES_DIR = Path(__file__).resolve().parent / "samples"
DEMO_FILES = {
    ("fashionmnist", "train"): "fashionmnist_train_first3000.npz",
    ("fashionmnist", "test"): "fashionmnist_test_first1000.npz",
    ("mnist", "test"): "mnist_test_first1000.npz",
    ("notmnist", "test"): "notmnist_test_first1000.npz",
}


def load_demo(dataset: str, label_names: list[str], req: LoadRequest) -> Dataset:
    """A sample shipped in the package (``samples/``): the first N images of a split, in order."""
    path = SAMPLES_DIR / DEMO_FILES[(dataset, req.split)]
    if not path.is_file():
        raise InputError(f"demo-{dataset}: the packaged sample {path} is missing; reinstall oodflow")
    with np.load(path, allow_pickle=False) as z:
        x, y = z["x"][: req.limit], z["y"][: req.limit].astype(np.int64)
    return Dataset(x=to_images(x, str(path)), ids=row_ids(len(x)), labels=y, kind="image",
                   name=f"demo-{dataset}-{req.split}", label_names=label_names,
                   source=f"demo-{dataset}:{req.split} from {path} (sample: first {len(y)} of {dataset} {req.split})")


_ENTRIES = [
    DatasetEntry("fashionmnist", load_fashionmnist, ("train", "test"), "image", "Fashion-MNIST, 1x28x28, 10 classes"),
    DatasetEntry("mnist", load_mnist, ("train", "test"), "image", "MNIST digits, 1x28x28"),
    DatasetEntry("notmnist", load_notmnist, ("test",), "image", "notMNIST letters A-J, 1x28x28",
                 note="only notMNIST's test set exists; 'notmnist' alone means notmnist:test"),
    DatasetEntry("cifar10", load_cifar10, ("train", "test"), "image", "CIFAR-10, 3x32x32, 10 classes"),
    DatasetEntry("svhn", load_svhn, ("train", "test", "extra"), "image", "SVHN digits, 3x32x32"),
    DatasetEntry("celeba", load_celeba, ("train", "val", "test"), "image",
                 "CelebA faces, 3x32x32 (research use only)"),
    DatasetEntry("miniboone", load_miniboone, ("train", "val", "test"), "vector", "MiniBooNE, 43 features (MAF)"),
    DatasetEntry("hepmass", load_hepmass, ("train", "val", "test"), "vector", "HEPMASS, 21 features (MAF)"),
    DatasetEntry("demo-fashionmnist", partial(load_demo, "fashionmnist", FASHION_CLASSES), ("train", "test"),
                 "image", "shipped sample: Fashion-MNIST train 3000 / test 1000"),
    DatasetEntry("demo-mnist", partial(load_demo, "mnist", DIGITS), ("test",), "image",
                 "shipped sample: MNIST test 1000", note="the sample holds test images only"),
    DatasetEntry("demo-notmnist", partial(load_demo, "notmnist", LETTERS), ("test",), "image",
                 "shipped sample: notMNIST test 1000", note="the sample holds test images only"),
]

DATASETS: dict[str, DatasetEntry] = {e.name: e for e in _ENTRIES}


def get_entry(name: str) -> DatasetEntry:
    """The registry entry for ``name`` (any case).

    Raises:
        InputError: listing the valid names.
    """
    entry = DATASETS.get(name.lower())
    if entry is None:
        raise InputError(f"unknown dataset {name!r}; datasets: {', '.join(DATASETS)}")
    return entry


def resolve_split(entry: DatasetEntry, explicit: str | None, default: str) -> str:
    """The split to load: ``explicit`` if given, else ``default``, else the only split there is.

    Raises:
        InputError: the split does not exist; lists the valid ones.
    """
    split = explicit.lower() if explicit else default
    if split in entry.splits:
        return split
    if explicit is None and len(entry.splits) == 1:
        return entry.splits[0]
    note = f" ({entry.note})" if entry.note else ""
    raise InputError(f"{entry.name} has no split {split!r}; valid splits: {', '.join(entry.splits)}{note}")

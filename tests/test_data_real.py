"""Named datasets on the real files of ``$OODFLOW_DATA_DIR`` (the shared, read-only root).

Counts are those of the data READMEs. Skipped where the variable is not set or names no folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import real_data_root

from ood_flow.data import load_source
from ood_flow.data import vision
from ood_flow.data.images import decode_image
from ood_flow.data.vision import celeba_crop

ROOT, WHY_NOT = real_data_root()
pytestmark = pytest.mark.skipif(ROOT is None, reason=WHY_NOT)


def load(spec, **kwargs):
    return load_source(spec, data_dir=ROOT, **kwargs)


def counts(ds):
    return np.bincount(ds.labels, minlength=10).tolist()


def test_mnist_train_and_test():
    train, test = load("mnist:train"), load("mnist:test")
    assert tuple(train.x.shape) == (60000, 1, 28, 28) and tuple(test.x.shape) == (10000, 1, 28, 28)
    assert counts(train) == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert counts(test) == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert train.labels[:8].tolist() == [5, 0, 4, 1, 9, 2, 1, 3]
    assert abs(train.x.float().mean().item() / 255 - 0.1307) < 1e-3


def test_fashionmnist_train_and_test():
    train, test = load("fashionmnist:train"), load("fashionmnist:test")
    assert counts(train) == [6000] * 10 and counts(test) == [1000] * 10
    assert abs(train.x.float().mean().item() / 255 - 0.2860) < 1e-3
    assert test.label_names[test.labels[0]] == "Ankle boot"


def test_notmnist():
    ds = load("notmnist")
    assert tuple(ds.x.shape) == (10000, 1, 28, 28) and counts(ds) == [1000] * 10 and ds.name == "notmnist-test"


def test_cifar10_samples():
    test, train = load("cifar10:test"), load("cifar10:train")
    assert tuple(test.x.shape) == (1000, 3, 32, 32) and len(train) == 4000
    assert counts(test) == [103, 89, 100, 103, 90, 86, 112, 102, 106, 109]
    assert test.labels[:8].tolist() == [3, 8, 8, 0, 6, 6, 1, 6] and "sample" in test.source
    means = test.x.float().mean(dim=(0, 2, 3)) / 255
    assert torch.allclose(means, torch.tensor([0.497, 0.487, 0.451]), atol=2e-3)


def test_miniboone_shared_splits():
    test, val = load("miniboone:test"), load("miniboone:val")
    assert tuple(test.x.shape) == (3648, 43) and tuple(val.x.shape) == (3284, 43)
    assert test.x.mean(0).abs().max() < 0.2 and test.kind == "vector"


def test_celeba_sample_matches_the_original_jpegs():
    ds = load("celeba")
    jpgs = sorted((Path(ROOT) / "CelebA" / "img_align_celeba").glob("*.jpg"))
    ours = np.stack([celeba_crop(decode_image(p)) for p in jpgs])
    assert tuple(ds.x.shape) == (32, 3, 32, 32) and np.array_equal(ours, ds.x.numpy())


def test_read_only_root_is_read_in_place_and_never_downloads(monkeypatch):
    def must_not_run(*args):
        raise AssertionError("downloader called")

    monkeypatch.setitem(vision.DOWNLOADERS, "fashionmnist", must_not_run)
    before = sorted(os.listdir(Path(ROOT) / "FashionMNIST" / "raw"))
    assert len(load("fashionmnist:test", download=True)) == 10000
    assert sorted(os.listdir(Path(ROOT) / "FashionMNIST" / "raw")) == before


def test_limit_is_the_first_items_of_the_full_split():
    full = load("mnist:test")
    assert torch.equal(load("mnist:test", limit=123).x, full.x[:123])


@pytest.mark.parametrize("demo, real, n", [("demo-fashionmnist:train", "fashionmnist:train", 3000),
                                           ("demo-fashionmnist:test", "fashionmnist:test", 1000),
                                           ("demo-mnist:test", "mnist:test", 1000),
                                           ("demo-notmnist:test", "notmnist:test", 1000)])
def test_demo_samples_are_the_first_images_of_the_real_splits(demo, real, n):
    shipped, original = load_source(demo), load(real, limit=n)
    assert torch.equal(shipped.x, original.x) and np.array_equal(shipped.labels, original.labels)

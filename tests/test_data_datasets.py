"""Named datasets on small fake roots in torchvision's layout, the registry, and the offline path."""

from __future__ import annotations

import gzip
import pickle
import socket
import urllib.error

import numpy as np
import pytest
import torch
from PIL import Image

from ood_flow.data import DATASETS, default_data_root, load_source
from ood_flow.data import cifar, download, vision
from ood_flow.data.idx import read_idx
from ood_flow.errors import InputError

RNG = np.random.default_rng(0)


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, dtype=">u4").tobytes()
    return header + array.astype(np.uint8).tobytes()


def write_idx_dataset(root, folder, n_train=12, n_test=7, prefix_test="t10k"):
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    arrays = {}
    for prefix, n in (("train", n_train), (prefix_test, n_test)):
        x = RNG.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = RNG.integers(0, 10, size=n).astype(np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(x)))
        (raw / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(y)))
        arrays[prefix] = (x, y)
    return arrays


# ---------------------------------------------------------------- MNIST family and IDX


def test_fashionmnist_from_idx_gz(tmp_path):
    arrays = write_idx_dataset(tmp_path, "FashionMNIST")
    ds = load_source("fashionmnist:test", data_dir=str(tmp_path))
    x, y = arrays["t10k"]
    assert ds.name == "fashionmnist-test" and ds.kind == "image" and tuple(ds.x.shape) == (7, 1, 28, 28)
    assert np.array_equal(ds.x[:, 0].numpy(), x) and ds.labels.tolist() == y.tolist()
    assert ds.ids.tolist() == [str(i) for i in range(7)] and ds.label_names[9] == "Ankle boot"
    assert load_source("FashionMNIST", data_dir=str(tmp_path)).name == "fashionmnist-train"


def test_limit_reads_the_first_items(tmp_path):
    arrays = write_idx_dataset(tmp_path, "MNIST")
    ds = load_source("mnist:train", data_dir=str(tmp_path), limit=5)
    assert np.array_equal(ds.x[:, 0].numpy(), arrays["train"][0][:5]) and len(ds.labels) == 5


def test_uncompressed_idx_files_are_read_too(tmp_path):
    arrays = write_idx_dataset(tmp_path, "MNIST")
    raw = tmp_path / "MNIST" / "raw"
    for gz in raw.glob("t10k*.gz"):
        gz.with_suffix("").write_bytes(gzip.decompress(gz.read_bytes()))
        gz.unlink()
    assert np.array_equal(load_source("mnist:test", data_dir=str(tmp_path)).x[:, 0].numpy(), arrays["t10k"][0])


def test_truncated_idx_is_an_error_naming_the_file(tmp_path):
    write_idx_dataset(tmp_path, "MNIST")
    path = tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-100]))
    with pytest.raises(InputError, match=r"t10k-images-idx3-ubyte\.gz is truncated"):
        load_source("mnist:test", data_dir=str(tmp_path))
    path.write_bytes(path.read_bytes()[:200])  # a cut gzip stream
    with pytest.raises(InputError, match=r"t10k-images-idx3-ubyte\.gz"):
        load_source("mnist:test", data_dir=str(tmp_path))


def test_idx_magic_number_is_checked(tmp_path):
    path = tmp_path / "x-idx1-ubyte"
    path.write_bytes(b"\x01\x02\x03\x04" + bytes(8))
    with pytest.raises(InputError, match="not an IDX file"):
        read_idx(path, ndim=1)


def test_loading_writes_nothing_into_the_root(tmp_path):
    write_idx_dataset(tmp_path, "MNIST")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    load_source("mnist:test", data_dir=str(tmp_path))
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_class_value_on_a_named_dataset(tmp_path):
    arrays = write_idx_dataset(tmp_path, "MNIST", n_test=40)
    ds = load_source("mnist:test", data_dir=str(tmp_path), class_value="3", limit=2)
    expected = np.flatnonzero(arrays["t10k"][1] == 3)[:2]
    assert ds.labels.tolist() == [3] * len(expected) and ds.ids.tolist() == [str(i) for i in expected]


def test_notmnist_defaults_to_its_only_split(tmp_path):
    write_idx_dataset(tmp_path, "notMNIST")
    ds = load_source("notmnist", data_dir=str(tmp_path), split="train")
    assert ds.name == "notmnist-test" and ds.label_names[:3] == ["A", "B", "C"]
    with pytest.raises(InputError, match=r"notmnist has no split 'train'; valid splits: test \(only notMNIST's test"):
        load_source("notmnist:train", data_dir=str(tmp_path))


def test_notmnist_letter_folders_skip_unreadable_files(tmp_path):
    base = tmp_path / "notMNIST"
    for k, letter in enumerate("ABCDEFGHIJ"):
        (base / letter).mkdir(parents=True)
        Image.fromarray(np.full((28, 28), k, dtype=np.uint8)).save(base / letter / "f.png")
    (base / "C" / "broken.png").write_bytes(b"")
    ds = load_source("notmnist:test", data_dir=str(tmp_path))
    assert len(ds) == 10 and ds.labels.tolist() == list(range(10)) and ds.x[3].max() == 3
    assert [p for p, _ in ds.skipped] == [str(base / "C" / "broken.png")]


# ---------------------------------------------------------------- registry errors


def test_unknown_dataset_lists_the_names():
    with pytest.raises(InputError, match="unknown dataset 'imagenet'.*datasets: fashionmnist, mnist, notmnist"):
        load_source("imagenet")
    assert {"fashionmnist", "mnist", "notmnist", "cifar10", "svhn", "celeba", "miniboone", "hepmass",
            "demo-fashionmnist", "demo-mnist", "demo-notmnist"} <= set(DATASETS)


def test_unknown_split_lists_the_splits():
    with pytest.raises(InputError, match="mnist has no split 'valid'; valid splits: train, test"):
        load_source("mnist:valid")


def test_default_data_root(monkeypatch, tmp_path):
    monkeypatch.setenv("OODFLOW_DATA_DIR", str(tmp_path / "env"))
    assert default_data_root(str(tmp_path / "arg")) == tmp_path / "arg"
    assert default_data_root() == tmp_path / "env"
    monkeypatch.delenv("OODFLOW_DATA_DIR")
    assert str(default_data_root()).endswith(".cache/oodflow")


# ---------------------------------------------------------------- offline downloads


def test_offline_error_says_which_files_to_put_where(tmp_path, monkeypatch):
    seen = {}

    def offline(root, split):
        seen["timeout"] = socket.getdefaulttimeout()
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setitem(vision.DOWNLOADERS, "fashionmnist", offline)
    with pytest.raises(InputError) as info:
        load_source("fashionmnist:test", data_dir=str(tmp_path))
    message = str(info.value)
    assert message.startswith(f"fashionmnist: not found under {tmp_path}; put train-images-idx3-ubyte.gz, "
                              "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz "
                              f"in {tmp_path}/FashionMNIST/raw/ (or set --data-dir / OODFLOW_DATA_DIR)")
    assert "download failed" in message and "\n" not in message
    assert seen["timeout"] == download.DOWNLOAD_TIMEOUT_S and socket.getdefaulttimeout() != seen["timeout"]


def test_no_download_when_not_allowed_or_root_not_writable(tmp_path, monkeypatch):
    def must_not_run(*args):
        raise AssertionError("downloader called")

    monkeypatch.setitem(vision.DOWNLOADERS, "mnist", must_not_run)
    with pytest.raises(InputError, match="mnist: not found under"):
        load_source("mnist:test", data_dir=str(tmp_path), download=False)
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(InputError, match="is not writable, so no download was tried"):
        load_source("mnist:test", data_dir=str(blocker / "root"))


def test_a_successful_download_is_then_read(tmp_path, monkeypatch):
    monkeypatch.setitem(vision.DOWNLOADERS, "mnist", lambda root, split: write_idx_dataset(root, "MNIST"))
    assert len(load_source("mnist:test", data_dir=str(tmp_path))) == 7


# ---------------------------------------------------------------- CIFAR-10


def write_cifar_batches(root, n=4):
    folder = root / cifar.BATCH_FOLDER
    folder.mkdir(parents=True)
    data = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = RNG.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        batch = {"batch_label": name, "labels": list(RNG.integers(0, 10, size=n)), "data": x,
                 "filenames": [b"f.png"] * n}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
        data[name] = batch
    return data


def test_cifar10_batches(tmp_path):
    data = write_cifar_batches(tmp_path)
    ds = load_source("cifar10:train", data_dir=str(tmp_path), limit=6)
    assert tuple(ds.x.shape) == (6, 3, 32, 32) and ds.label_names[0] == "airplane"
    expected = np.concatenate([data["data_batch_1"]["data"], data["data_batch_2"]["data"][:2]])
    assert np.array_equal(ds.x.reshape(6, -1).numpy(), expected)
    assert len(load_source("cifar10:test", data_dir=str(tmp_path))) == 4
    assert len(load_source("cifar10:train", data_dir=str(tmp_path))) == 20


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_cifar10_refuses_pickles_that_run_code(tmp_path):
    write_cifar_batches(tmp_path)
    (tmp_path / cifar.BATCH_FOLDER / "test_batch").write_bytes(pickle.dumps({"data": _Evil()}, protocol=2))
    with pytest.raises(InputError, match=r"refusing to load .*print"):
        load_source("cifar10:test", data_dir=str(tmp_path))


def test_cifar10_falls_back_to_the_samples(tmp_path):
    (tmp_path / "CIFAR10").mkdir()
    np.savez(tmp_path / "CIFAR10" / "cifar10_test_first1000.npz",
             x=np.zeros((3, 32, 32, 3), np.uint8), y=np.arange(3))
    ds = load_source("cifar10:test", data_dir=str(tmp_path))
    assert tuple(ds.x.shape) == (3, 3, 32, 32) and "sample: first 1000 of the official test set" in ds.source


def test_cifar10_offline_error(tmp_path, monkeypatch):
    monkeypatch.setitem(cifar.DOWNLOADERS, "cifar10", lambda root: (_ for _ in ()).throw(OSError("offline")))
    with pytest.raises(InputError, match=r"cifar10: not found .*data_batch_1.*test_batch.*download failed: offline"):
        load_source("cifar10:test", data_dir=str(tmp_path))


# ---------------------------------------------------------------- SVHN and CelebA


def test_svhn_mat_files(tmp_path):
    savemat = pytest.importorskip("scipy.io").savemat
    (tmp_path / "svhn").mkdir()
    x = RNG.integers(0, 256, size=(32, 32, 3, 5), dtype=np.uint8)
    savemat(tmp_path / "svhn" / "test_32x32.mat", {"X": x, "y": np.array([[10], [1], [2], [10], [9]])})
    ds = load_source("svhn:test", data_dir=str(tmp_path))
    assert tuple(ds.x.shape) == (5, 3, 32, 32) and ds.labels.tolist() == [0, 1, 2, 0, 9]
    assert np.array_equal(ds.x[1].numpy(), x[..., 1].transpose(2, 0, 1))


def test_celeba_torchvision_layout(tmp_path):
    folder = tmp_path / "celeba" / "img_align_celeba"
    folder.mkdir(parents=True)
    for i in range(1, 5):
        Image.fromarray(np.full((218, 178, 3), 40 * i, np.uint8)).save(folder / f"{i:06d}.jpg")
    (tmp_path / "celeba" / "list_eval_partition.txt").write_text(
        "000001.jpg 0\n000002.jpg 0\n000003.jpg 1\n000004.jpg 2\n")
    train = load_source("celeba:train", data_dir=str(tmp_path))
    assert tuple(train.x.shape) == (2, 3, 32, 32) and abs(int(train.x[1].float().mean()) - 80) <= 2
    assert len(load_source("celeba:test", data_dir=str(tmp_path))) == 1


def test_celeba_sample_only_has_train(tmp_path):
    (tmp_path / "CelebA").mkdir()
    np.savez(tmp_path / "CelebA" / "celeba_first32.npz", x32=np.zeros((2, 32, 32, 3), np.uint8))
    assert len(load_source("celeba", data_dir=str(tmp_path))) == 2
    with pytest.raises(InputError, match="holds 32 training images only"):
        load_source("celeba:test", data_dir=str(tmp_path))


# ---------------------------------------------------------------- shipped demo samples


def test_demo_samples_need_no_root(tmp_path):
    ds = load_source("demo-mnist", data_dir=str(tmp_path / "nothing"))
    assert ds.name == "demo-mnist-test" and tuple(ds.x.shape) == (1000, 1, 28, 28) and ds.x.dtype == torch.uint8
    fashion = load_source("demo-fashionmnist:train", limit=10)
    assert len(fashion) == 10 and fashion.labels.dtype == np.int64 and fashion.label_names[0] == "T-shirt/top"
    assert len(load_source("demo-fashionmnist", split="test")) == 1000
    assert load_source("demo-notmnist").label_names[0] == "A"

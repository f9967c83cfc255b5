"""SOURCE grammar on files made in tmp_path: image folders and files, npy/npz, HDF5, CSV."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from ood_flow.data import load_source
from ood_flow.errors import InputError


def write_png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)
    return path


def gray(seed, size=(8, 6)):
    return np.random.default_rng(seed).integers(0, 256, size=size, dtype=np.uint8)


@pytest.fixture
def folder(tmp_path):
    """b.png, a.png, sub/c.PNG (8 rows x 6 columns, gray) and a text file to ignore."""
    root = tmp_path / "batch"
    write_png(root / "b.png", gray(1))
    write_png(root / "a.png", gray(0))
    write_png(root / "sub" / "c.PNG", gray(2))
    (root / "notes.txt").write_text("not an image")
    write_png(root / ".ipynb_checkpoints" / "a-checkpoint.png", gray(5))
    (root / "._b.png").write_bytes(b"macOS resource fork")
    return root


# ---------------------------------------------------------------- image folders and files


def test_folder_is_recursive_sorted_and_ignores_other_and_hidden_files(folder):
    ds = load_source(str(folder))
    assert ds.kind == "image" and ds.name == "batch" and ds.labels is None
    assert ds.x.dtype == torch.uint8 and tuple(ds.x.shape) == (3, 1, 8, 6)
    assert [os.path.relpath(i, folder) for i in ds.ids] == ["a.png", "b.png", os.path.join("sub", "c.PNG")]
    assert np.array_equal(ds.x[1, 0].numpy(), gray(1))
    assert ds.source == str(folder.resolve()) and ds.skipped == []


def test_folder_limit_takes_the_first_files_in_path_order(folder):
    ds = load_source(str(folder), limit=2)
    assert [os.path.basename(i) for i in ds.ids] == ["a.png", "b.png"]
    assert torch.equal(ds.x, load_source(str(folder)).x[:2])
    assert "[limit 2]" in ds.source


def test_jpg_folder_gives_rgb(tmp_path):
    rgb = np.zeros((10, 12, 3), dtype=np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).save(tmp_path / "x.JPG", quality=95)
    Image.fromarray(rgb).save(tmp_path / "y.jpeg", quality=95)
    ds = load_source(str(tmp_path))
    assert tuple(ds.x.shape) == (2, 3, 10, 12)
    assert abs(int(ds.x[0, 0].float().mean()) - 200) <= 2 and int(ds.x[0, 2].max()) <= 5


def test_gray_images_join_colour_ones_as_three_channels(tmp_path):
    write_png(tmp_path / "a.png", gray(0))
    write_png(tmp_path / "b.png", np.stack([gray(1)] * 3, axis=-1))
    ds = load_source(str(tmp_path))
    assert tuple(ds.x.shape) == (2, 3, 8, 6)
    assert torch.equal(ds.x[0, 0], ds.x[0, 2])


def test_corrupt_png_fails_naming_the_file_or_is_skipped(folder):
    bad = folder / "b0.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    with pytest.raises(InputError, match=r"b0\.png.*--skip-invalid"):
        load_source(str(folder))
    ds = load_source(str(folder), skip_invalid=True)
    assert len(ds) == 3 and [p for p, _ in ds.skipped] == [str(bad)]
    assert ds.skipped[0][1]  # a reason


def test_truncated_png_is_an_error(tmp_path):
    path = write_png(tmp_path / "t.png", gray(3, size=(64, 64)))
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(InputError, match="t.png"):
        load_source(str(path))


def test_limit_counts_only_readable_images_when_skipping(folder):
    (folder / "a0.png").write_bytes(b"garbage")
    ds = load_source(str(folder), limit=2, skip_invalid=True)
    assert [os.path.basename(i) for i in ds.ids] == ["a.png", "b.png"] and len(ds.skipped) == 1


def test_mixed_sizes_name_the_file_and_both_sizes(folder):
    write_png(folder / "z.png", gray(4, size=(5, 5)))
    with pytest.raises(InputError, match=r"z\.png is 5x5 but .*a\.png is 6x8"):
        load_source(str(folder))


def test_folder_without_images_is_an_error(tmp_path):
    (tmp_path / "readme.md").write_text("hi")
    with pytest.raises(InputError, match="contains no images"):
        load_source(str(tmp_path))


def test_single_image_file(folder):
    ds = load_source(str(folder / "a.png"))
    assert tuple(ds.x.shape) == (1, 1, 8, 6) and ds.name == "a" and ds.ids.tolist() == [str(folder / "a.png")]


def test_non_image_single_file_is_an_error(folder):
    with pytest.raises(InputError, match="notes.txt is not a supported file"):
        load_source(str(folder / "notes.txt"))


def test_missing_path_is_an_error(tmp_path):
    with pytest.raises(InputError, match="no such file or folder"):
        load_source(str(tmp_path / "nope"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_file_is_an_error(folder):
    path = folder / "a.png"
    path.chmod(0)
    with pytest.raises(InputError, match="permission denied"):
        load_source(str(path))


# ---------------------------------------------------------------- npy / npz


def test_npy_2d_is_vectors(tmp_path):
    a = np.random.default_rng(0).normal(size=(7, 4))
    np.save(tmp_path / "f.npy", a)
    ds = load_source(str(tmp_path / "f.npy"), limit=5)
    assert ds.kind == "vector" and ds.x.dtype == torch.float32 and tuple(ds.x.shape) == (5, 4)
    assert np.allclose(ds.x.numpy(), a[:5]) and ds.ids.tolist() == ["0", "1", "2", "3", "4"]


def test_npy_nan_names_row_and_column(tmp_path):
    a = np.zeros((4, 3))
    a[2, 1] = np.nan
    np.save(tmp_path / "f.npy", a)
    with pytest.raises(InputError, match="f.npy: non-finite value nan at row 2, column 1"):
        load_source(str(tmp_path / "f.npy"))


@pytest.mark.parametrize("layout", ["nhw", "nhwc", "nchw", "nhw1"])
def test_npy_image_layouts(tmp_path, layout):
    base = np.random.default_rng(0).integers(0, 256, size=(3, 5, 7), dtype=np.uint8)
    arrays = {"nhw": base, "nhwc": np.stack([base] * 3, -1), "nchw": np.stack([base] * 3, 1), "nhw1": base[..., None]}
    np.save(tmp_path / "i.npy", arrays[layout])
    ds = load_source(str(tmp_path / "i.npy"))
    channels = 1 if layout in ("nhw", "nhw1") else 3
    assert ds.kind == "image" and tuple(ds.x.shape) == (3, channels, 5, 7)
    assert np.array_equal(ds.x[:, -1].numpy(), base)


def test_float_images_in_unit_range_are_scaled(tmp_path):
    a = np.array([[[0.0, 0.5], [1.0, 0.2]]])
    np.save(tmp_path / "u.npy", a)
    assert load_source(str(tmp_path / "u.npy")).x[0, 0].tolist() == [[0, 128], [255, 51]]


@pytest.mark.parametrize("array, message", [
    (np.full((1, 4, 4), 300, dtype=np.int32), "0..255, found 300..300"),
    (np.full((1, 4, 4), 12.5), "float image values"),
    (np.zeros((1, 2, 2, 2, 2)), "neither vectors"),
    (np.zeros(5), "neither vectors"),
])
def test_bad_image_arrays(tmp_path, array, message):
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(InputError, match=message):
        load_source(str(tmp_path / "bad.npy"))


def test_object_arrays_are_refused(tmp_path):
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="Python objects"):
        load_source(str(tmp_path / "o.npy"))


def test_npz_with_labels_and_key_syntax(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, size=(6, 4, 4, 3), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(6), other=np.zeros((6, 2)))
    ds = load_source(str(tmp_path / "d.npz"), limit=4)
    assert tuple(ds.x.shape) == (4, 3, 4, 4) and ds.labels.tolist() == [0, 1, 2, 3]
    assert ds.labels.dtype == np.int64 and ds.name == "d"
    other = load_source(f"{tmp_path / 'd.npz'}:other")
    assert other.kind == "vector" and other.name == "d-other" and other.source.endswith("d.npz:other")
    with pytest.raises(InputError, match="no array 'zzz'; arrays: x, y, other"):
        load_source(f"{tmp_path / 'd.npz'}:zzz")


def test_npz_single_array_and_ambiguous(tmp_path):
    np.savez(tmp_path / "one.npz", feats=np.ones((3, 2)))
    assert tuple(load_source(str(tmp_path / "one.npz")).x.shape) == (3, 2)
    np.savez(tmp_path / "two.npz", a=np.ones((3, 2)), b=np.ones((3, 2)))
    with pytest.raises(InputError, match=r"cannot tell which array.*two\.npz:KEY"):
        load_source(str(tmp_path / "two.npz"))


def test_npz_labels_of_wrong_length(tmp_path):
    np.savez(tmp_path / "l.npz", x=np.zeros((3, 2)), y=np.arange(2))
    with pytest.raises(InputError, match="labels must be 3 whole numbers"):
        load_source(str(tmp_path / "l.npz"))


def test_truncated_npz_is_an_error(tmp_path):
    np.savez_compressed(tmp_path / "t.npz", x=np.arange(10000).reshape(100, 100))
    data = (tmp_path / "t.npz").read_bytes()
    (tmp_path / "t.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cannot read .*t.npz"):
        load_source(str(tmp_path / "t.npz"))


# ---------------------------------------------------------------- HDF5


def write_features(path, n=5, d=3):
    with h5py.File(path, "w") as f:
        f["features"] = np.arange(n * d, dtype=np.float32).reshape(n, d)
        f["id"] = np.array([f"img{i}.png" for i in range(n)], dtype=h5py.string_dtype())
        f["label"] = np.arange(n, dtype=np.int64) % 2
        f.attrs["label_names"] = ["cat", "dog"]
        f.attrs["backbone"] = "resnet18"
    return path


def test_h5_features_file(tmp_path):
    ds = load_source(str(write_features(tmp_path / "feat.h5")), limit=4)
    assert ds.kind == "vector" and tuple(ds.x.shape) == (4, 3) and ds.x.dtype == torch.float32
    assert ds.ids.tolist() == ["img0.png", "img1.png", "img2.png", "img3.png"]
    assert ds.labels.tolist() == [0, 1, 0, 1] and ds.label_names == ["cat", "dog"] and ds.name == "feat"


def test_h5_images(tmp_path):
    with h5py.File(tmp_path / "im.hdf5", "w") as f:
        f["images"] = np.zeros((2, 6, 5, 3), dtype=np.uint8)
    ds = load_source(str(tmp_path / "im.hdf5"))
    assert ds.kind == "image" and tuple(ds.x.shape) == (2, 3, 6, 5)


def test_h5_score_file_is_refused(tmp_path):
    with h5py.File(tmp_path / "scores.h5", "w") as f:
        f.create_group("mnist-test")["log_likelihood"] = np.zeros(3)
    with pytest.raises(InputError, match=r"scores\.h5 is a score file, not a data source"):
        load_source(str(tmp_path / "scores.h5"))


def test_h5_that_is_not_hdf5(tmp_path):
    (tmp_path / "x.h5").write_bytes(b"hello")
    with pytest.raises(InputError, match=r"x\.h5: not an HDF5 file"):
        load_source(str(tmp_path / "x.h5"))


def test_a_folder_of_mixed_sizes_loads_at_one_size_when_asked(tmp_path):
    from ood_flow.data.pixels import resize_images
    from ood_flow.data.images import decode_image

    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate([(8, 8), (12, 10), (5, 16)]):
        Image.fromarray(rng.integers(0, 255, (h, w), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    with pytest.raises(InputError, match="differ in size"):
        load_source(str(tmp_path))
    ds = load_source(str(tmp_path), image_size=(8, 8))
    assert ds.x.shape == (3, 1, 8, 8) and "[images read at 8x8]" in ds.source
    for i in range(3):
        raw = torch.from_numpy(decode_image(tmp_path / f"{i}.png"))[None]
        want = raw if i == 0 else resize_images(raw, (8, 8))
        assert torch.equal(ds.x[i : i + 1], want)

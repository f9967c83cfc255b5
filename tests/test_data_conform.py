"""conform(): shape checks between a dataset and a model, and the conversions the flags allow."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ood_flow.data import Dataset, conform
from ood_flow.data.conform import TrainedOn, data_name
from ood_flow.data.pixels import resize_images, to_grayscale
from ood_flow.errors import InputError


def images(c, h, w, n=2, value=None):
    x = torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8) if value is None else \
        torch.full((n, c, h, w), value, dtype=torch.uint8)
    return Dataset(x=x, ids=np.arange(n).astype(str), labels=None, kind="image", name="src", source="/data/src")


def vectors(d, n=3):
    return Dataset(x=torch.zeros(n, d), ids=np.arange(n).astype(str), labels=None, kind="vector",
                   name="feats", source="/data/feats.h5:features")


def test_matching_shapes_return_the_dataset_itself():
    ds = images(1, 28, 28)
    assert conform(ds, (1, 28, 28), resize=True, rgb=True, grayscale=True) is ds
    v = vectors(43)
    assert conform(v, (43,)) is v


def test_mismatch_names_shapes_and_the_flags_to_pass():
    with pytest.raises(InputError, match=r"^src: images are 1x28x28 but the model expects 3x32x32; "
                                         r"pass --resize and --rgb to convert$"):
        conform(images(1, 28, 28), (3, 32, 32))
    with pytest.raises(InputError, match="pass --rgb to convert"):
        conform(images(1, 28, 28), (3, 32, 32), resize=True)
    with pytest.raises(InputError, match="3x28x28 but the model expects 1x28x28; pass --grayscale"):
        conform(images(3, 28, 28), (1, 28, 28))


def test_vector_dimension_mismatch():
    with pytest.raises(InputError, match="feats: vectors have 64 dimensions but the model expects 43"):
        conform(vectors(64), (43,))


def test_images_for_a_vector_model_and_back():
    with pytest.raises(InputError, match="holds 1x28x28 images but the model expects 43-dimensional vectors"):
        conform(images(1, 28, 28), (43,))
    with pytest.raises(InputError, match="holds 64-dimensional vectors but the model expects 3x32x32 images"):
        conform(vectors(64), (3, 32, 32))


def test_resize_and_rgb_convert_and_record_it():
    ds = images(1, 28, 28, value=77)
    out = conform(ds, (3, 32, 32), resize=True, rgb=True)
    assert out.x.dtype == torch.uint8 and tuple(out.x.shape) == (2, 3, 32, 32)
    assert (out.x == 77).all()  # a constant image stays constant through resizing
    assert out.source == "/data/src [converted 1x28x28 to 3x32x32: resize, rgb]"
    assert tuple(ds.x.shape) == (2, 1, 28, 28)  # the input is left alone


def test_grayscale_uses_itu_601_luma_like_pil():
    rgb = torch.randint(0, 256, (1, 3, 9, 7), dtype=torch.uint8)
    ours = to_grayscale(rgb)[0, 0].numpy().astype(int)
    pil = np.asarray(Image.fromarray(rgb[0].permute(1, 2, 0).numpy()).convert("L")).astype(int)
    assert tuple(to_grayscale(rgb).shape) == (1, 1, 9, 7) and np.abs(ours - pil).max() <= 1
    red = torch.zeros(1, 3, 2, 2, dtype=torch.uint8)
    red[:, 0] = 255
    assert to_grayscale(red).unique().tolist() == [76]


def test_downsizing_averages_with_antialiasing():
    stripes = torch.zeros(1, 1, 8, 8, dtype=torch.uint8)
    stripes[..., ::2] = 255  # alternate columns: 255, 0, 255, 0, ...
    small = resize_images(stripes, (4, 4))
    assert tuple(small.shape) == (1, 1, 4, 4) and 100 <= int(small.float().mean()) <= 155
    assert int(small.max()) - int(small.min()) < 80  # not just every other column picked


def test_channel_counts_without_a_conversion():
    with pytest.raises(InputError, match="images have 3 channels but the model expects 4"):
        conform(images(3, 8, 8), (4, 8, 8))


FM = TrainedOn("m.pt", "fashionmnist-train")


def test_a_named_model_says_first_what_it_was_trained_on_then_how_to_force_it():
    with pytest.raises(InputError, match=r"^m\.pt was trained on 1x28x28 images of fashionmnist-train; these are "
                                         r"3x32x32 images of src: if that is really meant, pass --resize and "
                                         r"--grayscale to convert them$"):
        conform(images(3, 32, 32), (1, 28, 28), model=FM)
    with pytest.raises(InputError, match=r"^m\.pt was trained on 1x28x28 images of fashionmnist-train; these are "
                                         r"3x32x32 images of src: if that is really meant, pass --grayscale"):
        conform(images(3, 32, 32), (1, 28, 28), resize=True, model=FM)
    with pytest.raises(InputError, match=r"^m\.pt was trained on 4x8x8 images; these are 3x8x8 images of src, and "
                                         r"no conversion from their channels exists$"):
        conform(images(3, 8, 8), (4, 8, 8), model=TrainedOn("m.pt"))


def test_a_named_model_of_vectors_says_what_it_was_trained_on():
    t = TrainedOn("t.pt", "feats.h5")
    with pytest.raises(InputError, match=r"^t\.pt was trained on 43-dimensional vectors of feats\.h5; these are "
                                         r"64-dimensional vectors of feats$"):
        conform(vectors(64), (43,), model=t)
    with pytest.raises(InputError, match=r"^t\.pt was trained on 43-dimensional vectors of feats\.h5; these are "
                                         r"1x28x28 images of src \(embed the images first with 'oodflow embed'"):
        conform(images(1, 28, 28), (43,), model=t)


def test_a_named_model_says_what_it_was_trained_on_for_each_image_file(tmp_path):
    from ood_flow.data import open_source
    from ood_flow.data.conform import conform_source

    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(tmp_path / "b.png")
    src, transform = conform_source(open_source(str(tmp_path)), (1, 28, 28), model=FM)
    with pytest.raises(InputError, match=r"b\.png: m\.pt was trained on 1x28x28 images of fashionmnist-train; "
                                         r"this image is 3x10x10: if that is really meant, pass --resize and "
                                         r"--grayscale to convert it"):
        list(src.batches(8, transform, workers=0))


@pytest.mark.parametrize("source, name", [
    ("fashionmnist:train from /d/FashionMNIST/raw/train-images-idx3-ubyte.gz [limit 5]", "fashionmnist-train"),
    ("demo-mnist:test from /p/mnist_test_first1000.npz (sample: first 1000 of mnist test)", "demo-mnist-test"),
    ("/data/x/imgs.npz:x", "imgs.npz"), ("/data/f.h5:features", "f.h5"), ("/data/photos [class cat]", "photos")])
def test_data_name_is_short(source, name):
    assert data_name(source) == name


def test_score_names_the_models_training_data_before_the_flags_that_would_force_it(tmp_path):
    from cli_helpers import TRAIN_SMALL, image_npz, one_line_error, run

    run("train", "--data", image_npz(tmp_path / "gray.npz", n=40), "--out", tmp_path / "m.pt", *TRAIN_SMALL,
        "--max-steps", "1")
    np.savez(tmp_path / "colour.npz", x=np.zeros((4, 3, 10, 10), np.uint8))
    err = one_line_error(run("score", tmp_path / "colour.npz", "--model", tmp_path / "m.pt", code=1),
                         "m.pt was trained on 1x8x8 images of gray.npz; these are 3x10x10 images of colour",
                         "if that is really meant, pass --resize and --grayscale")
    assert err.index("trained on") < err.index("--resize")

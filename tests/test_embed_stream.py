"""Embedding a source as it is read: the same features as embedding the images in memory, any image
size in a folder, and the bf16 path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ood_flow.data import load_source, open_source
from ood_flow.device import bf16_supported
from ood_flow.embed import ImageTransform, create_backbone, embed_images, embed_stream, transform_for
from ood_flow.errors import InputError, NoBfloat16, UsageError

BACKBONE = "test_efficientnet"


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = create_backbone(BACKBONE, pretrained=False)
    with torch.no_grad():  # non-trivial batch-norm statistics
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.1, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
    return m


def _photos(folder, sizes, seed=0):
    rng = np.random.default_rng(seed)
    for i, (h, w, c) in enumerate(sizes):
        a = rng.integers(0, 256, (h, w, c) if c == 3 else (h, w), dtype=np.uint8)
        Image.fromarray(a).save(folder / f"{i:02d}.png")
    return folder


@pytest.mark.parametrize("workers", [0, 2])
def test_a_folder_of_any_sizes_gives_the_features_of_each_image_alone(tmp_path, model, workers):
    sizes = [(20, 30, 3), (33, 17, 1), (40, 40, 3), (24, 24, 1), (50, 20, 3)] * 3
    folder = _photos(tmp_path, sizes)
    transform = transform_for(model, 32)
    out = embed_stream(model, open_source(str(folder)), transform, batch_size=4, workers=workers)
    assert out.features.shape == (15, model.num_features) and list(out.ids) == sorted(map(str, folder.glob("*.png")))
    each = np.concatenate([embed_images(model, load_source(i).x, image_size=32) for i in out.ids])
    np.testing.assert_allclose(out.features, each, rtol=1e-5, atol=1e-6)


def test_rows_in_memory_give_the_features_of_embed_images(tmp_path, model):
    x = np.random.default_rng(1).integers(0, 256, (10, 28, 28), dtype=np.uint8)
    np.savez(tmp_path / "x.npz", x=x, y=np.arange(10) % 2)
    out = embed_stream(model, open_source(str(tmp_path / "x.npz")), transform_for(model, 32), batch_size=3, workers=2)
    np.testing.assert_allclose(out.features, embed_images(model, torch.from_numpy(x)[:, None], image_size=32),
                               rtol=1e-5, atol=1e-6)
    assert list(out.labels) == [0, 1] * 5 and list(out.ids) == [str(i) for i in range(10)]


def test_vectors_are_refused(tmp_path, model):
    np.save(tmp_path / "v.npy", np.zeros((4, 5), dtype=np.float32))
    with pytest.raises(InputError, match="vectors; embedding needs images"):
        embed_stream(model, open_source(str(tmp_path / "v.npy")), transform_for(model))


def test_bf16_is_close_to_fp32_or_refused_where_not_native(model):
    x = torch.from_numpy(np.random.default_rng(2).integers(0, 256, (6, 3, 32, 32), dtype=np.uint8))
    if not bf16_supported("cpu"):
        with pytest.raises(NoBfloat16, match="cannot run bfloat16"):
            embed_images(model, x, precision="bf16")
        return
    a = embed_images(model, x, precision="fp32")
    b = embed_images(model, x, precision="bf16")
    assert b.dtype == np.float32
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > 0.99 and not np.array_equal(a, b)


def test_unknown_precision_and_transform_round_trip(model):
    with pytest.raises(UsageError, match="unknown precision 'fp16'"):
        embed_images(model, torch.zeros(1, 3, 8, 8, dtype=torch.uint8), precision="fp16")
    t = transform_for(model, 48)
    assert ImageTransform.from_dict(t.to_dict()) == t and t.size == 48


def test_weights_hash_names_the_weights_not_the_file_or_layout(tmp_path, model):
    from ood_flow.embed.weights import weights_sha256

    torch.save(model.state_dict(), tmp_path / "w.pth")
    again = create_backbone(BACKBONE, weights=str(tmp_path / "w.pth"))
    first = weights_sha256(again)
    assert weights_sha256(again.to(memory_format=torch.channels_last)) == first == weights_sha256(model)
    with torch.no_grad():
        p = next(again.parameters())
        p[(0,) * p.dim()] += 1e-6
    assert weights_sha256(again) != first


@pytest.mark.parametrize("workers", [0, 2])
def test_batches_reach_the_backbone_already_channels_last_from_folders_and_memory(tmp_path, model, workers):
    """The transform writes the backbone's memory format in the workers (no copy in the main process),
    with the values of the plain channels-first arithmetic."""
    folder = _photos(tmp_path, [(20, 30, 3), (33, 17, 1), (24, 24, 1)])
    transform = transform_for(model, 32)
    batches = list(open_source(str(folder)).batches(2, transform, workers=workers))
    x = torch.randint(0, 256, (5, 1, 28, 28), dtype=torch.uint8)
    np.savez(tmp_path / "x.npz", x=x[:, 0].numpy())
    batches += list(open_source(str(tmp_path / "x.npz")).batches(2, transform, workers=workers))
    assert [len(b.ids) for b in batches] == [2, 1, 2, 2, 1]
    assert all(b.x.is_contiguous(memory_format=torch.channels_last) for b in batches)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (transform.mean, transform.std))
    plain = (torch.nn.functional.interpolate(x.float() / 255, size=(32, 32), mode=transform.interpolation,
                                             antialias=True).clamp(0, 1).expand(-1, 3, -1, -1) - mean) / std
    assert torch.equal(torch.cat([b.x for b in batches[2:]]), plain)


class _Probe(torch.utils.data.Dataset):
    """Reports, from inside a DataLoader worker, how batch_tensor allocated."""

    def __len__(self):
        return 2

    def __getitem__(self, i):
        from ood_flow.data.workers import batch_tensor

        t = batch_tensor((2, 3, 4, 5), channels_last=bool(i))
        fmt = torch.channels_last if i else torch.contiguous_format
        return t.is_shared(), t.is_contiguous(memory_format=fmt), tuple(t.shape)


def test_batch_tensors_are_allocated_in_shared_memory_only_inside_workers():
    from ood_flow.data.workers import batch_tensor

    here = batch_tensor((2, 3, 4, 5), channels_last=True)
    assert not here.is_shared() and here.is_contiguous(memory_format=torch.channels_last)
    loader = torch.utils.data.DataLoader(_Probe(), batch_size=None, num_workers=1)
    assert [(bool(s), bool(c), tuple(shape)) for s, c, shape in loader] == [(True, True, (2, 3, 4, 5))] * 2

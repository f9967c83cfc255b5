"""The embedding core: backbones, weight files, preprocessing, and offline failures."""

import socket

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file
from torch import nn

from ood_flow.embed import BACKBONES, backbone_config, backbones, create_backbone, embed_images
from ood_flow.errors import InputError

TINY = ["test_resnet", "test_efficientnet"]


def _images(n=7, c=3, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, size, size), dtype=torch.uint8, generator=g)


class _Probe(nn.Module):
    """Returns the per-channel mean of what it is fed, and remembers the input shape."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.pretrained_cfg = {"input_size": (3, 8, 8), "mean": (0.1, 0.2, 0.3), "std": (0.5, 0.25, 0.125),
                               "interpolation": "bicubic"}
        self.shapes = []

    def forward(self, x):
        self.shapes.append(tuple(x.shape))
        return self.scale * x.mean(dim=(2, 3))


def _randomise_bn(model, seed=0):
    """Non-trivial running statistics, so a forgotten buffer changes the features."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


@pytest.mark.parametrize("name", TINY)
def test_features_have_shape_dtype_and_are_deterministic(name):
    model = create_backbone(name, pretrained=False)
    x = _images(5)
    f = embed_images(model, x, image_size=32)
    assert f.shape == (5, model.num_features) and f.dtype == np.float32
    assert np.isfinite(f).all() and f.std() > 0
    np.testing.assert_array_equal(f, embed_images(model, x, image_size=32))


@pytest.mark.parametrize("name", TINY)
def test_batch_size_does_not_change_features(name):
    model = create_backbone(name, pretrained=False)
    x = _images(7)
    a = embed_images(model, x, image_size=48, batch_size=3)
    b = embed_images(model, x, image_size=48, batch_size=7)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_grayscale_is_repeated_to_rgb():
    model = create_backbone("test_resnet", pretrained=False)
    gray = _images(4, c=1)
    np.testing.assert_array_equal(embed_images(model, gray), embed_images(model, gray.repeat(1, 3, 1, 1)))


def test_normalisation_uses_the_backbone_mean_and_std():
    probe = _Probe()
    x = torch.full((2, 1, 8, 8), 51, dtype=torch.uint8)  # 0.2 after scaling
    got = embed_images(probe, x)
    want = (0.2 - np.array([0.1, 0.2, 0.3])) / np.array([0.5, 0.25, 0.125])
    np.testing.assert_allclose(got, np.tile(want, (2, 1)), atol=1e-6)


def test_resize_to_configured_or_given_size_and_progress_per_batch():
    probe, done = _Probe(), []
    x = _images(7, size=20)
    embed_images(probe, x, batch_size=3, progress=done.append)
    assert probe.shapes == [(3, 3, 8, 8)] * 2 + [(1, 3, 8, 8)] and done == [3, 3, 1]
    embed_images(probe, x, image_size=12)
    assert probe.shapes[-1] == (7, 3, 12, 12)
    # A flat image stays flat through the antialiased bicubic resize.
    flat = embed_images(probe, torch.full((1, 3, 20, 20), 255, dtype=torch.uint8))
    np.testing.assert_allclose(flat[0], (1 - np.array([0.1, 0.2, 0.3])) / np.array([0.5, 0.25, 0.125]), atol=1e-5)


def test_numpy_images_are_accepted():
    probe = _Probe()
    x = _images(3)
    np.testing.assert_array_equal(embed_images(probe, x.numpy()), embed_images(probe, x))


@pytest.mark.parametrize("bad", [
    torch.zeros(2, 3, 8, 8),  # float
    torch.zeros(2, 8, 8, 3, dtype=torch.uint8),  # channels last
    torch.zeros(3, 8, 8, dtype=torch.uint8),  # no batch axis
    [[0]],
])
def test_bad_images_raise_input_error(bad):
    with pytest.raises(InputError, match="images must"):
        embed_images(_Probe(), bad)


def _saved_timm(tmp_path, suffix):
    """A random test_resnet with its head, saved the way training scripts save it."""
    ref = _randomise_bn(timm.create_model("test_resnet", pretrained=False))
    path = tmp_path / f"w{suffix}"
    state = {k: v.contiguous() for k, v in ref.state_dict().items()}
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, path)
    return ref, path


@pytest.mark.parametrize("suffix", [".pth", ".pt", ".safetensors"])
def test_weights_file_gives_the_saved_model_features(tmp_path, suffix):
    ref, path = _saved_timm(tmp_path, suffix)
    x = _images(4)
    logits = embed_images(create_backbone("test_resnet", weights=str(path), classifier=True), x)
    np.testing.assert_array_equal(logits, embed_images(ref, x))
    ref.reset_classifier(0)
    features = embed_images(create_backbone("test_resnet", weights=str(path)), x)
    assert features.shape == (4, ref.num_features)
    np.testing.assert_array_equal(features, embed_images(ref, x))


def test_weights_of_another_model_raise_input_error_naming_file_and_keys(tmp_path):
    path = tmp_path / "other.pth"
    torch.save(timm.create_model("test_efficientnet", pretrained=False).state_dict(), path)
    with pytest.raises(InputError, match=r"other\.pth.*missing .*unexpected .*conv_stem"):
        create_backbone("test_resnet", weights=str(path))


def test_weights_with_other_shapes_raise_input_error(tmp_path):
    state = timm.create_model("test_resnet", pretrained=False, num_classes=0).state_dict()
    state["conv1.0.weight"] = torch.zeros(1, 1, 1, 1)
    path = tmp_path / "shapes.pt"
    torch.save(state, path)
    with pytest.raises(InputError, match=r"shapes\.pt.*conv1\.0\.weight"):
        create_backbone("test_resnet", weights=str(path))


@pytest.mark.parametrize("content", [b"", b"not a checkpoint", b"\x80\x04K\x01."])
def test_unreadable_weights_raise_input_error(tmp_path, content):
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    with pytest.raises(InputError, match=r"bad\.pth"):
        create_backbone("test_resnet", weights=str(path))


def test_missing_weights_file_raises_input_error(tmp_path):
    with pytest.raises(InputError, match="nope.pt: weights file not found"):
        create_backbone("test_resnet", weights=str(tmp_path / "nope.pt"))


def test_unknown_backbone_lists_close_names():
    with pytest.raises(InputError, match=r"unknown backbone 'resnt18'.*resnet18.*cifar_resnet20") as e:
        create_backbone("resnt18", pretrained=False)
    assert "\n" not in str(e.value)


def test_unknown_pretrained_tag_lists_the_tags():
    with pytest.raises(InputError, match=r"no pretrained tag 'bogus'.*resnet18\.a1_in1k"):
        create_backbone("resnet18.bogus")


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path


def test_pretrained_offline_without_cache_fails_without_trying_the_network(empty_caches, monkeypatch):
    """Offline, a missing weight file is an error at once: no connection, no download attempt (timm's
    retries would take about a minute)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tried = []
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: tried.append("connect"))
    real_create = backbones.timm.create_model
    monkeypatch.setattr(backbones.timm, "create_model",
                        lambda *a, **k: tried.append("download") if k.get("pretrained") else real_create(*a, **k))
    with pytest.raises(InputError, match=r"no pretrained weights for 'test_resnet'.*--weights FILE.*hf"):
        create_backbone("test_resnet")
    assert tried == []


def test_pretrained_with_unreachable_hub_fails_fast(empty_caches, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)

    def refuse(*args, **kwargs):
        raise OSError("no network in this test")

    monkeypatch.setattr(socket, "create_connection", refuse)
    with pytest.raises(InputError, match="no network"):
        create_backbone("test_resnet")


def test_pretrained_loads_from_the_hub_cache(empty_caches, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ref = _randomise_bn(timm.create_model("test_resnet", pretrained=False))
    repo = empty_caches / "hf" / "models--timm--test_resnet.r160_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()},
              str(repo / "snapshots" / "abc123" / "model.safetensors"))
    ref.reset_classifier(0)
    x = _images(3)
    np.testing.assert_array_equal(embed_images(create_backbone("test_resnet"), x), embed_images(ref, x))


def test_cifar_resnets_need_weights_for_pretrained():
    assert {"cifar_resnet20", "cifar_resnet56"} <= set(BACKBONES)
    with pytest.raises(InputError, match="cifar_resnet20.*--weights FILE"):
        create_backbone("cifar_resnet20")


@pytest.mark.parametrize("name", ["cifar_resnet20", "cifar_resnet56"])
def test_cifar_resnet_random_init_gives_64_features(name):
    model = create_backbone(name, pretrained=False)
    assert backbone_config(model) == {"input_size": (3, 32, 32), "mean": (0.485, 0.456, 0.406),
                                      "std": (0.229, 0.224, 0.225), "interpolation": "bilinear"}
    assert embed_images(model, _images(3, c=1, size=28)).shape == (3, 64)


def test_cifar_resnet_depth_must_be_6n_plus_2():
    from ood_flow.embed.cifar_resnet import CifarResNet

    assert sum(isinstance(m, nn.Conv2d) for m in CifarResNet(20).modules()) == 19
    with pytest.raises(ValueError, match="6n\\+2"):
        CifarResNet(21)


def test_backbone_config_follows_timm():
    model = create_backbone("test_efficientnet", pretrained=False)
    cfg = backbone_config(model)
    assert cfg["input_size"] == model.pretrained_cfg["input_size"]
    assert (cfg["mean"], cfg["std"], cfg["interpolation"]) == (
        model.pretrained_cfg["mean"], model.pretrained_cfg["std"], model.pretrained_cfg["interpolation"])

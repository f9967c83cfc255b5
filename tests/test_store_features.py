"""Features files (``oodflow embed``'s output): round trip, and never replacing another kind of file."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from ood_flow import store
from ood_flow.errors import OutputError, ScoreFileError


def test_features_round_trip(tmp_path):
    path = tmp_path / "feat.h5"
    x = np.random.default_rng(0).normal(size=(4, 3))
    store.write_features(path, x, ids=["a", "b", "c", "d"], labels=[0, 1, 1, 0],
                         attrs={"backbone": "resnet18", "source": "cifar10:test"})
    got, attrs = store.read_features(path)
    assert got["features"].dtype == np.float32
    assert got["features"].tobytes() == x.astype(np.float32).tobytes()
    assert got["id"].tolist() == ["a", "b", "c", "d"] and got["label"].tolist() == [0, 1, 1, 0]
    assert attrs == {"backbone": "resnet18", "source": "cifar10:test"}
    with h5py.File(path, "r") as f:
        assert f.attrs["oodflow_format"] == "features" and f["features"].shape == (4, 3)
    with pytest.raises(FileExistsError, match="exists; pass overwrite=True"):
        store.write_features(path, x[:2], ids=["a", "b"], attrs={})
    store.write_features(path, x[:2], ids=["a", "b"], attrs={}, overwrite=True)  # a features file may be replaced
    assert store.read_features(path)[0]["features"].shape == (2, 3)


def test_features_refuse_to_replace_a_score_file(tmp_path):
    scores = tmp_path / "scores.h5"
    store.write_group(scores, "mnist-test", {"log_likelihood": [-1.0, -2.0], "id": ["a", "b"]}, {})
    raw = scores.read_bytes()
    with pytest.raises(OutputError, match="exists and is not an oodflow features file; refusing to replace it"):
        store.write_features(scores, np.zeros((2, 2)), ids=["a", "b"], attrs={}, overwrite=True)
    assert scores.read_bytes() == raw
    with pytest.raises(ScoreFileError, match="an oodflow score file, not a features file"):
        store.read_features(scores)

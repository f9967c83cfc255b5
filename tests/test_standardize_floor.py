"""Feature columns that are constant or near-constant in training (pooled ReLU channels of a CNN that
are zero for almost every image) must not give absurd bits/dim to in-distribution samples that are
a little off them (issue 13, item 5: a feature flow's mean in-distribution bits/dim was 5.9e6)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import ood_flow
from cli_helpers import run_json
from ood_flow.flows.preprocess import Standardize


def _features(n: int, seed: int) -> np.ndarray:
    """8 columns: six ordinary ones, one zero for 98 % of rows (else up to 0.01), one constant."""
    rng = np.random.default_rng(seed)
    x = np.abs(rng.normal(size=(n, 8))) * np.linspace(0.5, 2.0, 8)
    x[:, 6] = np.where(rng.random(n) < 0.02, rng.uniform(0, 0.01, n), 0.0)
    x[:, 7] = 3.0
    return x.astype(np.float32)


def test_near_constant_and_constant_columns_get_the_floor_and_others_their_own_std():
    x = torch.from_numpy(_features(500, 0))
    layer = Standardize(8, floor=0.1)
    layer.fit(x)
    std = x.std(0, unbiased=False)
    floor = 0.1 * float(std[:7].median())
    torch.testing.assert_close(layer.log_std.exp()[:6], std[:6])
    torch.testing.assert_close(layer.log_std.exp()[6:], torch.full((2,), floor))
    assert float(std[6]) < floor / 10  # the column really is near-constant
    plain = Standardize(8)  # no floor (tables): each column its own std, constant columns 1
    plain.fit(x)
    torch.testing.assert_close(plain.log_std.exp(), torch.cat([std[:7], torch.ones(1)]))


def test_features_written_by_embed_get_the_feature_floor_and_tables_none(tmp_path):
    from ood_flow import store
    from ood_flow.flows import load_model
    from ood_flow.flows.configs import FEATURE_STD_FLOOR

    x = _features(60, 3)
    store.write_features(tmp_path / "f.h5", x, ids=np.arange(60).astype(str), attrs={"backbone": "test_resnet"})
    np.save(tmp_path / "t.npy", x)
    for name, floor in (("f.h5", FEATURE_STD_FLOOR), ("t.npy", 0.0)):
        run_json("train", "--data", tmp_path / name, "--model", "tabular", "--out", tmp_path / f"{name}.pt",
                 "--hidden", "8", "--max-steps", "1")
        assert load_model(tmp_path / f"{name}.pt").config.std_floor == floor


def test_a_sample_a_little_off_a_near_constant_column_keeps_a_sane_score():
    x = torch.from_numpy(_features(500, 0))
    flow = ood_flow.create_flow("tabular", (8,), hidden=8, std_floor=0.1)  # couplings start as the identity
    flow.fit_preprocessing(x)
    off = x[:5].clone()
    off[:, 6] = 0.2  # twenty times the largest training value of that column
    off[:, 7] = 3.1
    with torch.no_grad():
        bpd = -flow.log_prob(torch.cat([x, off])) / (8 * math.log(2))
    median = float(bpd[:500].median())
    assert torch.isfinite(bpd).all() and float(bpd[500:].max()) - median < 50
    # dividing by the column's own std (about 1e-3) put these samples ~1e4 bits/dim above the median
    raw = (off[:, 6] - x[:, 6].mean()) / x[:, 6].std(unbiased=False)
    assert float(0.5 * raw.pow(2).min() / (8 * math.log(2))) > 1e3


@pytest.mark.slow
def test_a_trained_feature_flow_scores_held_out_data_within_bounds(tmp_path):
    from ood_flow import store

    test = _features(400, 2)
    test[:20, 6] = 0.05  # five times the largest training value of that column
    for name, x in (("train", _features(1200, 1)), ("test", test)):
        store.write_features(tmp_path / f"{name}.h5", x, ids=np.arange(len(x)).astype(str), attrs={"backbone": "b"})
    run_json("train", "--data", tmp_path / "train.h5", "--model", "tabular", "--out", tmp_path / "f.pt",
             "--hidden", "32", "--epochs", "15", "--batch-size", "128", "--lr", "3e-3")
    run_json("score", tmp_path / "test.h5", "--model", tmp_path / "f.pt", "--out", tmp_path / "s.h5")
    bpd = store.read_scores(tmp_path / "s.h5", "test", "bits_per_dim")
    assert np.isfinite(bpd).all() and (bpd - np.median(bpd)).max() < 1e3

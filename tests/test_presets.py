"""--preset: the paper's settings per kind of data by default, a small CPU preset, the count and estimate."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

import ood_flow
from cli_helpers import image_npz, run, run_json
from ood_flow.train.presets import PRESETS, data_kind, get_preset


@pytest.mark.parametrize("kind,shape,source", [("grayscale", (1, 28, 28), "mnist"), ("colour", (3, 32, 32), "c"),
                                               ("embedding", (1280,), "/f.h5:features"), ("uci", (8,), "/t.csv")])
def test_data_kind(kind, shape, source):
    assert data_kind("image" if len(shape) == 3 else "vector", shape, source) == kind


def test_paper_preset_is_the_papers_appendix_c_and_k1():
    gray, colour = get_preset("paper", "realnvp", "grayscale"), get_preset("paper", "realnvp", "colour")
    assert gray.model == {"scales": 2, "blocks": 6, "channels": 64}
    assert (gray.train["lr"], gray.train["batch_size"], gray.train["epochs"], gray.train["optimizer"]) == \
        (5e-5, 32, 80, "adam")
    assert (colour.model["scales"], colour.model["blocks"], colour.train["lr"], colour.train["weight_decay"],
            colour.train["epochs"]) == (3, 8, 1e-4, 5e-5, 100)
    glow = get_preset("paper", "glow", "grayscale")
    assert (glow.model["couplings"], glow.model["channels"], glow.train["optimizer"]) == (16, 200, "rmsprop")
    uci, emb = get_preset("paper", "tabular", "uci"), get_preset("paper", "tabular", "embedding")
    assert (uci.model["hidden"], uci.model["layers"], uci.train["lr"], uci.train["batch_size"], uci.train["epochs"]) \
        == (256, 1, 1e-4, 32, 100)
    assert (emb.model["hidden"], emb.model["layers"], emb.train["lr"], emb.train["batch_size"], emb.train["epochs"]) \
        == (512, 3, 1e-3, 1024, 120)
    assert uci.train["optimizer"] == emb.train["optimizer"] == "adamw" and uci.train["weight_decay"] == 1e-3


def test_every_preset_covers_every_family_and_kind():
    for preset in PRESETS:
        for family, kinds in (("realnvp", ("grayscale", "colour")), ("glow", ("grayscale", "colour")),
                              ("tabular", ("uci", "embedding"))):
            for kind in kinds:
                assert get_preset(preset, family, kind).train["epochs"] >= 1


def test_default_train_uses_the_paper_preset_visible_in_the_model_file(tmp_path):
    data = image_npz(tmp_path / "d.npz", size=8)
    result = run("train", "--data", data, "--out", tmp_path / "m.pt", "--max-steps", "1")
    flow, extra = ood_flow.load_checkpoint(tmp_path / "m.pt")
    assert (flow.config.scales, flow.config.blocks, flow.config.channels, flow.config.net) == (2, 6, 64, "resnet")
    assert sum(p.numel() for p in flow.parameters()) == 14_707_336
    cfg = extra["train_config"]
    got = (cfg["lr"], cfg["batch_size"], cfg["epochs"], cfg["optimizer"], cfg["patience"])
    assert got == (5e-5, 32, 80, "adam", 0)  # patience 0: early stopping off
    assert extra["preset"] == "paper"
    assert "14,707,336 parameters" in result.stderr and "paper preset for grayscale images" in result.stderr


def test_cpu_preset_and_explicit_options_over_it(tmp_path):
    data = image_npz(tmp_path / "d.npz", n=200, size=8)
    result = run("train", "--data", data, "--out", tmp_path / "m.pt", "--preset", "cpu", "--blocks", "1",
                 "--max-steps", "7")
    flow, extra = ood_flow.load_checkpoint(tmp_path / "m.pt")
    assert (flow.config.channels, flow.config.blocks) == (16, 1)  # the preset's width, the explicit depth
    cfg = extra["train_config"]
    assert (cfg["lr"], cfg["batch_size"], cfg["epochs"], cfg["patience"], cfg["min_delta"]) == (1e-3, 64, 30, 3, 0.005)
    assert "estimated" in result.stderr and "s/step (measured on steps 2-6" in result.stderr


def test_feature_files_get_the_embedding_settings_and_tables_the_uci_ones(tmp_path):
    rng = np.random.default_rng(0)
    with h5py.File(tmp_path / "f.h5", "w") as f:
        f["features"] = rng.normal(size=(64, 6)).astype(np.float32)
    np.savetxt(tmp_path / "t.csv", rng.normal(size=(64, 6)), delimiter=",", header="a,b,c,d,e,f", comments="")
    emb = run_json("train", "--data", tmp_path / "f.h5", "--out", tmp_path / "e.pt", "--max-steps", "1", "--quiet")
    uci = run_json("train", "--data", tmp_path / "t.csv", "--out", tmp_path / "u.pt", "--max-steps", "1", "--quiet")
    assert emb["steps"] == uci["steps"] == 1
    for name, hidden, layers, lr, batch in (("e.pt", 512, 3, 1e-3, 1024), ("u.pt", 256, 1, 1e-4, 32)):
        flow, extra = ood_flow.load_checkpoint(tmp_path / name)
        assert (flow.config.hidden, flow.config.layers, flow.config.couplings) == (hidden, layers, 8)
        assert (extra["train_config"]["lr"], extra["train_config"]["batch_size"]) == (lr, batch)
        assert extra["train_config"]["optimizer"] == "adamw"

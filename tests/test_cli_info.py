"""`oodflow info` on every kind of file oodflow writes, and one-line errors for every other file."""

import h5py
import numpy as np
import pytest
import torch
from cli_helpers import TRAIN_SMALL, image_npz, one_line_error, run, run_json

from ood_flow import create_flow, save_model, store
from ood_flow.fileio import sha256_file


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A model (and its checkpoint) trained for 3 steps on tiny images, and a score file made with it."""
    d = tmp_path_factory.mktemp("info")
    image_npz(d / "imgs.npz", n=40, size=8)
    run("train", "--data", d / "imgs.npz", "--out", d / "m.pt", *TRAIN_SMALL, "--max-steps", "3")
    run("score", d / "imgs.npz", "--model", d / "m.pt", "--out", d / "s.h5", "--name", "in", "--quiet")
    run("score", d / "imgs.npz", "--model", d / "m.pt", "--out", d / "s.h5", "--name", "gated",
        "--reference", f"{d / 's.h5'}:in", "--tpr", "0.9", "--quiet")
    return d


def test_model(trained):
    info = run_json("info", trained / "m.pt")
    flow = torch.load(trained / "m.pt", weights_only=True)
    assert info["kind"] == "model" and info["model"] == flow["model"] == "realnvp"
    assert info["config"] == flow["config"] and info["input_shape"] == [1, 8, 8]
    params = create_flow("realnvp", (1, 8, 8), **flow["config"]).parameters()
    assert info["parameters"] == sum(p.numel() for p in params)
    assert info["steps"] == 3 and info["training_data"].startswith(str((trained / "imgs.npz").resolve()))
    vals = [h["val_bpd"] for h in flow["extra"]["history"]]
    assert info["best_val_bits_per_dim"] == min(vals)
    assert info["precision"] == "float32 (trained in fp32)" and info["format_version"] == 2 and info["oodflow_version"]
    assert info["sha256"] == sha256_file(trained / "m.pt")


def test_checkpoint(trained):
    info = run_json("info", trained / "m.ckpt.pt")
    assert info["kind"] == "checkpoint" and info["steps"] == 3 and info["model"] == "realnvp"


def test_h5_model(tmp_path):
    flow = create_flow("tabular", (5,), couplings=2, hidden=8)
    save_model(flow, tmp_path / "t.h5", extra={"data": "table.csv", "steps": 7})
    info = run_json("info", tmp_path / "t.h5")
    assert info["kind"] == "model" and info["model"] == "tabular" and info["input_shape"] == [5]
    assert info["steps"] == 7 and info["training_data"] == "table.csv" and info["best_val_bits_per_dim"] is None
    assert info["parameters"] == sum(p.numel() for p in flow.parameters())


def test_score_file(trained):
    info = run_json("info", trained / "s.h5")
    assert info["kind"] == "scores" and [g["name"] for g in info["groups"]] == ["in", "gated"]
    first, gated = info["groups"]
    assert first["n"] == 40 and "log_likelihood" in first["scores"] and "is_ood" not in first["scores"]
    assert first["provenance"]["model_sha256"] == sha256_file(trained / "m.pt") and "gate" not in first
    assert gated["gate"]["n_ood"] == store.read_group(trained / "s.h5", "gated")[0]["is_ood"].sum()
    assert "s.h5:in (" in gated["gate"]["threshold_reference"]
    table = run("info", trained / "s.h5").stdout
    assert "in" in table and "gated" in table and "m.pt" in table and f"{gated['gate']['n_ood']} OOD" in table


def test_features_file(tmp_path):
    store.write_features(tmp_path / "f.h5", np.zeros((6, 4)), ids=np.arange(6), labels=np.arange(6),
                         attrs={"backbone": "resnet18", "image_size": 32, "source": "imgs/"})
    info = run_json("info", tmp_path / "f.h5")
    described = (info["kind"], info["n"], info["dim"], info["backbone"], info["labels"])
    assert described == ("features", 6, 4, "resnet18", True)
    assert "backbone: resnet18" in run("info", tmp_path / "f.h5").stdout


def test_plain_text_lists_the_model_fields(trained):
    out = run("info", trained / "m.pt").stdout
    for line in ("kind: model", "model: realnvp", "input shape: [1, 8, 8]", "steps: 3", "precision: float32"):
        assert line in out


def _foreign(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = np.zeros(3)
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    (tmp_path / "broken.pt").write_bytes(b"PK\x03\x04 truncated")
    return tmp_path


@pytest.mark.parametrize("name, fragment", [("notes.txt", "not a file oodflow wrote"),
                                            ("other.h5", "not a file oodflow wrote"),
                                            ("other.pt", "not an oodflow model file"),
                                            ("broken.pt", "not an oodflow model file"),
                                            ("missing.pt", "no such file"), (".", "is a directory")])
def test_other_files_are_one_line_errors(tmp_path, name, fragment):
    one_line_error(run("info", _foreign(tmp_path) / name, code=1), fragment)

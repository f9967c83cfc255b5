"""``oodflow embed`` through the CLI: features files that train and score accept, provenance, bad input.

A tiny timm backbone (``test_resnet``, random weights saved by the test) stands in for a pretrained
one; nothing here needs the network or real data.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import timm
import torch
from PIL import Image

from cli_helpers import one_line_error, run, run_json
from ood_flow import store
from ood_flow.embed import create_backbone, embed_images
from ood_flow.embed.weights import weights_sha256
from ood_flow.fileio import sha256_file

BACKBONE = "test_resnet"
SIZE = "32"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A weights file for the tiny backbone, and 24 grayscale 20x20 images with labels."""
    d = tmp_path_factory.mktemp("embed")
    torch.manual_seed(0)
    model = timm.create_model(BACKBONE, pretrained=False, num_classes=0)
    with torch.no_grad():  # non-trivial batch-norm statistics, so a forgotten buffer shows in the features
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    torch.save(model.state_dict(), d / "w.pth")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (24, 20, 20)).astype(np.uint8)
    np.savez(d / "imgs.npz", x=x, y=np.arange(24) % 4)
    return d


def _embed(files, out, *extra, code=0):
    return run("embed", files / "imgs.npz", "--backbone", BACKBONE, "--weights", files / "w.pth",
               "--image-size", SIZE, "--out", out, *extra, code=code)


def test_features_file_has_features_ids_labels_and_provenance(files, tmp_path):
    out = tmp_path / "f.h5"
    summary = run_json("embed", files / "imgs.npz", "--backbone", BACKBONE, "--weights", files / "w.pth",
                       "--image-size", SIZE, "--out", out, "--quiet")
    arrays, attrs = store.read_features(out)
    assert arrays["features"].shape == (24, 96) and arrays["features"].dtype == np.float32
    assert arrays["id"].tolist() == [str(i) for i in range(24)]
    assert arrays["label"].tolist() == (np.arange(24) % 4).tolist()
    cfg = timm.get_pretrained_cfg(BACKBONE)
    assert attrs["backbone"] == BACKBONE and attrs["image_size"] == 32 and attrs["feature_dim"] == 96
    assert attrs["weights"] == str((files / "w.pth").resolve())
    assert attrs["weights_sha256"] == sha256_file(files / "w.pth")
    assert attrs["backbone_sha256"] == weights_sha256(create_backbone(BACKBONE, weights=str(files / "w.pth")))
    assert np.allclose(attrs["mean"], cfg.mean) and np.allclose(attrs["std"], cfg.std)
    assert attrs["source"].endswith("imgs.npz:x") and attrs["oodflow_version"] and attrs["time"]
    assert summary == {**summary, "n": 24, "dim": 96, "image_size": 32, "labels": True, "file": str(out)}


def test_cli_features_equal_the_core_embedding(files, tmp_path):
    _embed(files, tmp_path / "f.h5", "--batch-size", "5", "--quiet")
    model = create_backbone(BACKBONE, weights=str(files / "w.pth"))
    images = torch.from_numpy(np.load(files / "imgs.npz")["x"])[:, None]
    expected = embed_images(model, images, image_size=32)
    got = store.read_features(tmp_path / "f.h5")[0]["features"]
    assert np.allclose(got, expected, atol=1e-5)
    assert not np.allclose(got[0], got[1])


def test_features_file_is_a_source_for_train_score_and_evaluate(files, tmp_path):
    feats = tmp_path / "f.h5"
    _embed(files, feats, "--quiet")
    summary = run_json("train", "--data", feats, "--model", "tabular", "--out", tmp_path / "t.pt", "--hidden", "8",
                       "--epochs", "2", "--quiet")
    assert summary["family"] == "tabular" and summary["n_train"] + summary["n_val"] + summary["n_calibration"] == 24
    run("score", feats, "--model", tmp_path / "t.pt", "--out", tmp_path / "s.h5", "--name", "in", "--quiet")
    run("score", feats, "--model", tmp_path / "t.pt", "--out", tmp_path / "s.h5", "--name", "two", "--class", "2",
        "--quiet")
    arrays, attrs = store.read_group(tmp_path / "s.h5", "in")
    assert arrays["log_likelihood"].shape == (24,) and np.isfinite(arrays["log_likelihood"]).all()
    assert arrays["label"].tolist() == (np.arange(24) % 4).tolist()
    assert store.read_group(tmp_path / "s.h5", "two")[0]["id"].tolist() == ["2", "6", "10", "14", "18", "22"]
    assert "auroc" in run_json("evaluate", tmp_path / "s.h5", "--in", "in", "--ood", "two")["ood"]["two"]


def test_nothing_on_stdout_the_written_file_and_progress_on_stderr_and_limit(files, tmp_path):
    result = _embed(files, tmp_path / "f.h5", "--limit", "7")
    assert result.stdout == "" and "imgs: 7 x 96 features (test_resnet, 32 px" in result.stderr
    assert "embed" in result.stderr and "error" not in result.stderr
    assert store.read_features(tmp_path / "f.h5")[0]["features"].shape == (7, 96)
    assert _embed(files, tmp_path / "g.h5", "--quiet").stderr == ""


def test_existing_file_is_kept_unless_overwrite(files, tmp_path):
    out = tmp_path / "f.h5"
    _embed(files, out, "--limit", "3", "--quiet")
    before = out.read_bytes()
    one_line_error(_embed(files, out, "--quiet", code=1), "exists", "--overwrite")
    assert out.read_bytes() == before
    _embed(files, out, "--overwrite", "--quiet")
    assert store.read_features(out)[0]["features"].shape == (24, 96)
    other = tmp_path / "scores.h5"
    with h5py.File(other, "w") as f:
        f["x"] = np.zeros(3)
    one_line_error(_embed(files, other, "--overwrite", "--quiet", code=1), "not an oodflow features file")
    assert h5py.File(other, "r")["x"].shape == (3,)


def test_corrupt_images_fail_in_one_line_or_are_skipped_and_recorded(files, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((16, 16, 3), 60 * i, np.uint8)).save(folder / f"{i}.png")
    (folder / "bad.png").write_bytes(b"not a png")
    args = ["embed", folder, "--backbone", BACKBONE, "--weights", files / "w.pth", "--image-size", SIZE]
    one_line_error(run(*args, "--out", tmp_path / "f.h5", "--quiet", code=1), "bad.png")
    assert not (tmp_path / "f.h5").exists()
    result = run(*args, "--out", tmp_path / "f.h5", "--skip-invalid")
    arrays, attrs = store.read_features(tmp_path / "f.h5")
    assert arrays["features"].shape == (3, 96) and "label" not in arrays
    assert [p.rsplit("/", 1)[-1] for p in arrays["id"]] == ["0.png", "1.png", "2.png"]
    assert "bad.png" in attrs["skipped"] and "bad.png" in result.stderr


@pytest.mark.parametrize("args, fragments", [
    (["--backbone", "resnt18"], ["unknown backbone 'resnt18'", "resnet18"]),
    (["--backbone", BACKBONE, "--weights", "missing.pth"], ["missing.pth", "not found"]),
    (["--backbone", "cifar_resnet20"], ["cifar_resnet20", "--weights"]),
])
def test_bad_backbones_and_weights_fail_in_one_line(files, tmp_path, args, fragments):
    result = run("embed", files / "imgs.npz", *args, "--out", tmp_path / "f.h5", code=1)
    one_line_error(result, *fragments)
    assert not (tmp_path / "f.h5").exists()


def test_weights_of_another_architecture_and_unreadable_weights(files, tmp_path):
    torch.save(timm.create_model("test_efficientnet", pretrained=False).state_dict(), tmp_path / "other.pth")
    (tmp_path / "junk.pth").write_bytes(b"junk")
    for weights, fragment in (("other.pth", "do not fit"), ("junk.pth", "cannot read weights")):
        result = run("embed", files / "imgs.npz", "--backbone", BACKBONE, "--weights", tmp_path / weights,
                     "--out", tmp_path / "f.h5", code=1)
        one_line_error(result, weights, fragment)


def test_bad_sources_and_outputs_fail_in_one_line(files, tmp_path):
    common = ["--backbone", BACKBONE, "--weights", files / "w.pth"]
    one_line_error(run("embed", tmp_path / "none.npz", *common, "--out", tmp_path / "f.h5", code=1), "none.npz")
    np.save(tmp_path / "v.npy", np.zeros((5, 3), np.float32))
    one_line_error(run("embed", tmp_path / "v.npy", *common, "--out", tmp_path / "f.h5", code=1), "embed needs images")
    one_line_error(run("embed", files / "imgs.npz", *common, "--out", tmp_path / "f.csv", code=2), ".h5")
    one_line_error(run("embed", files / "imgs.npz", *common, "--out", tmp_path / "no" / "f.h5", code=1),
                   "no such folder")
    assert run("embed", files / "imgs.npz", *common, "--out", tmp_path / "f.h5", "--device", "tpu", code=2)


def test_list_names_the_extra_backbones():
    out = run("embed", "--list").stdout
    assert "cifar_resnet20" in out and "tf_efficientnet_lite0" in out and "timm" in out

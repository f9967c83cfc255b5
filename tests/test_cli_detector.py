"""``train --features B``: one-file detectors that ``score`` runs on raw images or on features files
of the same backbone, with the threshold the model file carries; the bad inputs they refuse.

A tiny timm backbone (``test_resnet``, random weights saved by the test) stands in for a pretrained
one; nothing here needs the network or real data.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import timm
import torch

from cli_helpers import one_line_error, run, run_json
from ood_flow import store
from ood_flow.embed.weights import weights_sha256
from ood_flow.flows import load_checkpoint

NET = "test_resnet"
FAST = ["--epochs", "3", "--batch-size", "32", "--couplings", "2", "--hidden", "16", "--quiet"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Weights of the tiny backbone (and other weights), 80 in-distribution images, 30 unlike them,
    and a detector trained on the first."""
    d = tmp_path_factory.mktemp("detector")
    for name, seed in (("w.pth", 0), ("other.pth", 1)):
        torch.manual_seed(seed)
        torch.save(timm.create_model(NET, pretrained=False, num_classes=0).state_dict(), d / name)
    rng = np.random.default_rng(0)
    blobs = (rng.random((80, 20, 20)) < 0.2) * 200 + rng.integers(0, 30, (80, 20, 20))
    np.savez(d / "in.npz", x=blobs.astype(np.uint8), y=np.arange(80) % 4)
    stripes = np.tile((np.arange(20) % 4 < 2)[None, :, None] * 255, (30, 1, 20))
    np.savez(d / "ood.npz", x=stripes.astype(np.uint8))
    run("train", "--data", d / "in.npz", "--features", NET, "--weights", d / "w.pth", "--image-size", "32",
        "--out", d / "det.pt", "--val-fraction", "0.25", "--calibration-fraction", "0.25", *FAST)
    return d


def test_the_model_file_records_the_backbone_but_not_its_weights(files):
    flow, extra = load_checkpoint(files / "det.pt")
    record = extra["detector"]
    backbone = timm.create_model(NET, pretrained=False, num_classes=0)
    backbone.load_state_dict(torch.load(files / "w.pth", weights_only=True))
    assert record["backbone"] == NET and record["backbone_sha256"] == weights_sha256(backbone)
    assert record["transform"]["size"] == 32 and record["weights_file"] == str((files / "w.pth").resolve())
    assert flow.name == "tabular" and flow.input_shape == (backbone.num_features,)
    assert not set(torch.load(files / "det.pt", weights_only=True)["state_dict"]) & set(backbone.state_dict())
    assert extra["calibration"]["n"] == 20 and extra["train_config"]["patience"] == 10  # 25% of 80 held out
    assert extra["calibration"]["settings"]["backbone_precision"] == "fp32"


def test_images_embedded_on_the_fly_score_as_their_features_file(files, tmp_path):
    run("embed", files / "in.npz", "--backbone", NET, "--weights", files / "w.pth", "--image-size", "32",
        "--out", tmp_path / "f.h5", "--quiet")
    run("score", files / "in.npz", "--model", files / "det.pt", "--out", tmp_path / "s.h5", "--name", "img",
        "--batch-size", "7", "--quiet")
    run("score", tmp_path / "f.h5", "--model", files / "det.pt", "--out", tmp_path / "s.h5", "--name", "feat",
        "--quiet")
    on_the_fly, _ = store.read_group(tmp_path / "s.h5", "img")
    from_file, attrs = store.read_group(tmp_path / "s.h5", "feat")
    np.testing.assert_allclose(on_the_fly["log_likelihood"], from_file["log_likelihood"], rtol=1e-5)
    assert list(on_the_fly["id"]) == list(from_file["id"]) and "features file made by test_resnet" in \
        attrs["detector_input"]


def test_features_of_other_weights_are_refused_and_nothing_is_written(files, tmp_path):
    run("embed", files / "in.npz", "--backbone", NET, "--weights", files / "other.pth", "--image-size", "32",
        "--out", tmp_path / "other.h5", "--quiet")
    r = run("score", tmp_path / "other.h5", "--model", files / "det.pt", "--out", tmp_path / "s.h5", code=1)
    one_line_error(r, "but the detector was trained on test_resnet")
    assert not (tmp_path / "s.h5").exists()
    r = run("score", files / "in.npz", "--model", files / "det.pt", "--weights", files / "other.pth", code=1)
    one_line_error(r, "not those the detector was trained with")


def test_the_gate_uses_the_models_calibration_and_says_so_and_reference_overrides(files, tmp_path):
    out = run_json("score", files / "ood.npz", "--model", files / "det.pt", "--out", tmp_path / "s.h5",
                   "--max-ood-fraction", "1.0", "--quiet")
    gate = out["gate"]
    assert gate["threshold_from"] == "model" and gate["tpr"] == 0.95 and gate["n_reference"] == 20
    values = load_checkpoint(files / "det.pt")[1]["calibration"]["values"]
    assert np.mean(np.asarray(values) >= gate["threshold"]) >= 0.95
    text = run("score", files / "ood.npz", "--model", files / "det.pt", "--max-ood-fraction", "1.0",
               "--quiet").stdout
    assert "det.pt's calibration (20 scores)" in text and "20 calibration scores" in text
    run("score", files / "in.npz", "--model", files / "det.pt", "--out", tmp_path / "s.h5", "--name", "ref",
        "--quiet")
    over = run_json("score", files / "ood.npz", "--model", files / "det.pt", "--reference", f"{tmp_path / 's.h5'}:ref",
                    "--tpr", "0.5", "--quiet")["gate"]
    assert over["threshold_from"] == "reference" and over["n_reference"] == 80 and over["tpr"] == 0.5


def test_the_gate_fails_with_exit_3_when_the_batch_is_evidently_ood(files):
    r = run("score", files / "ood.npz", "--model", files / "det.pt", "--max-ood-fraction", "0.0", "--quiet",
            code=3)
    assert "30 of 30 flagged" in r.stderr and "evidence that more than 0.0 % are OOD" in r.stderr


def test_a_detector_gates_only_with_the_backbone_precision_it_was_calibrated_with(files):
    from ood_flow.device import bf16_supported

    if not bf16_supported("cpu"):
        pytest.skip("this CPU has no native bfloat16")
    r = run("score", files / "ood.npz", "--model", files / "det.pt", "--max-ood-fraction", "0.0", "--precision",
            "bf16", code=2)
    one_line_error(r, "--precision bf16 of the backbone (calibrated with fp32)")


@pytest.mark.parametrize("figure", ["latents", "coupling", "resample"])
def test_image_figures_refuse_a_detector_with_a_usage_error(files, tmp_path, figure):
    r = run("visualize", figure, files / "in.npz", "--model", files / "det.pt", "--out", tmp_path / "f.png", code=2)
    assert "is a feature detector" in r.stderr and not (tmp_path / "f.png").exists()


def test_samples_refuse_a_detector_with_a_usage_error(files, tmp_path):
    r = run("visualize", "samples", "--model", files / "det.pt", "--out", tmp_path / "f.png", code=2)
    assert "is a feature detector" in r.stderr and not (tmp_path / "f.png").exists()


def test_an_unknown_backbone_lists_near_matches_and_writes_nothing(files, tmp_path):
    r = run("train", "--data", files / "in.npz", "--features", "resnet1B", "--out", tmp_path / "m.pt", code=1)
    one_line_error(r, "resnet18")
    assert list(tmp_path.iterdir()) == []


def test_missing_weights_offline_say_where_to_put_them(files, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    r = run("train", "--data", files / "in.npz", "--features", "resnet18", "--out", tmp_path / "m.pt", code=1)
    one_line_error(r, "--weights")
    assert not (tmp_path / "m.pt").exists()


def test_images_with_a_channel_count_the_backbone_cannot_take_are_refused(files, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((5, 2, 20, 20), dtype=np.uint8))
    r = run("train", "--data", tmp_path / "x.npy", "--features", NET, "--weights", files / "w.pth",
            "--out", tmp_path / "m.pt", code=1)
    one_line_error(r)
    assert not (tmp_path / "m.pt").exists()


def test_pixel_models_and_negative_data_are_usage_errors_with_features(files, tmp_path):
    r = run("train", "--data", files / "in.npz", "--features", NET, "--model", "realnvp", "--out", tmp_path / "m.pt",
            code=2)
    one_line_error(r, "--features trains a tabular flow or a gaussian")


def test_a_features_file_of_the_backbone_trains_the_same_detector(files, tmp_path):
    run("embed", files / "in.npz", "--backbone", NET, "--weights", files / "w.pth", "--image-size", "32",
        "--out", tmp_path / "f.h5", "--quiet")
    for model in ("tabular", "gaussian"):
        run("train", "--data", tmp_path / "f.h5", "--features", NET, "--weights", files / "w.pth", "--model", model,
            "--out", tmp_path / f"{model}.pt", "--val-fraction", "0.25", "--calibration-fraction", "0",
            *(FAST if model == "tabular" else ["-q"]))
        record = load_checkpoint(tmp_path / f"{model}.pt")[1]["detector"]
        assert record == load_checkpoint(files / "det.pt")[1]["detector"]
    summary = run_json("train", "--data", tmp_path / "f.h5", "--features", NET, "--weights", files / "w.pth",
                       "--model", "gaussian", "--out", tmp_path / "gaussian.pt", "--val-fraction", "0.25",
                       "--calibration-fraction", "0", "--overwrite")
    assert (summary["n_train"], summary["n_val"], summary["model"]) == (60, 20, str(tmp_path / "gaussian.pt"))
    run("score", files / "in.npz", "--model", tmp_path / "gaussian.pt", "--quiet")
    with h5py.File(tmp_path / "f.h5", "r") as f:
        n = f["features"].shape[0]
    r = run("train", "--data", tmp_path / "f.h5", "--features", "resnet18", "--out", tmp_path / "x.pt", code=1)
    one_line_error(r, "features of test_resnet")
    assert n == 80 and not (tmp_path / "x.pt").exists()


def test_a_flow_on_features_takes_appendix_k1_architecture_by_default():
    from ood_flow.data import Dataset
    from ood_flow.train.choose import new_flow, preset_for

    ds = Dataset(x=torch.zeros(4, 8), ids=np.arange(4).astype(str), labels=None, kind="vector", name="f", source="f",
                 meta={"backbone": NET})
    defaults = preset_for("paper", ds, None).model  # the paper preset of a features file: Appendix K.1
    cfg = new_flow(ds, None, {}, defaults, 0, "cpu").config
    assert (cfg.couplings, cfg.hidden, cfg.layers, cfg.std_floor) == (8, 512, 3, 1.0)
    assert new_flow(ds, None, {"hidden": 16}, defaults, 0, "cpu").config.hidden == 16


def test_a_folder_of_photos_of_different_sizes_is_embedded_and_scored(files, tmp_path):
    from PIL import Image

    rng = np.random.default_rng(1)
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, (h, w) in enumerate([(40, 30), (25, 50), (33, 33), (60, 20), (21, 22)]):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / f"{i}.jpg")
    run("embed", folder, "--backbone", NET, "--weights", files / "w.pth", "--image-size", "32",
        "--out", tmp_path / "f.h5", "--quiet")
    scored = run_json("score", folder, "--model", files / "det.pt", "--out", tmp_path / "s.h5", "--name", "photos")
    assert scored["n"] == 5 and np.isfinite(scored["mean_bits_per_dim"])
    run("score", tmp_path / "f.h5", "--model", files / "det.pt", "--out", tmp_path / "s.h5", "--name", "feat",
        "--quiet")
    a, b = store.read_group(tmp_path / "s.h5", "photos")[0], store.read_group(tmp_path / "s.h5", "feat")[0]
    np.testing.assert_allclose(a["log_likelihood"], b["log_likelihood"], rtol=1e-5)


def test_a_closed_form_detector_shows_its_embedding_and_one_line_for_the_fit(files, tmp_path):
    from ood_flow.train import FeatureSpec, TrainEvents, train_flow

    seen = {"embed": [], "fit": [], "start": [], "epoch": []}
    events = TrainEvents(on_start=lambda *a: seen["start"].append(a), on_epoch=seen["epoch"].append,
                         on_embed=lambda done, n: seen["embed"].append((done, n)), on_fit=seen["fit"].append)
    train_flow(str(files / "in.npz"), out=tmp_path / "api.pt", model="gaussian", events=events,
               features=FeatureSpec(NET, str(files / "w.pth"), 32))
    assert seen["embed"] and seen["embed"][-1] == (80, 80) and not seen["start"] and not seen["epoch"]
    assert seen["fit"][0]["n_train"] == 72 and seen["fit"][0]["model"] == "gaussian"
    err = run("train", "--data", files / "in.npz", "--features", NET, "--weights", files / "w.pth", "--image-size",
              "32", "--model", "gaussian", "--out", tmp_path / "g.pt").stderr
    assert "embedded 80 images of in in " in err and f"s with {NET} at 32 px" in err
    assert "embed" in err and "80/80 images" in err  # the embedding's bar
    fit = [line for line in err.splitlines() if line.startswith("gaussian fitted")]
    assert len(fit) == 1 and fit[0].startswith("gaussian fitted in closed form on 72 vectors in ")
    assert "train " in fit[0] and "bits/dim, val " in fit[0] and "(4 held out)" in fit[0]
    assert "epoch 1" not in err and "0/1" not in err and "estimated" not in err and "0 steps" not in err

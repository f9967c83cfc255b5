"""The gate as a CI job meets it: `score --max-ood-fraction` on a model file's calibration, `oodflow calibrate`,
what the JSON states, the settings it refuses, unreadable files, and the calibration through `train --resume`."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from cli_helpers import TRAIN_SMALL, image_npz, one_line_error, run, run_json
from ood_flow import store
from ood_flow.flows import load_checkpoint, save_model
from ood_flow.flows.io import model_digest, read_model_file


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny RealNVP trained on 200 8x8 images, 40 of them held out for calibration; more of the same for
    calibrate and scoring."""
    d = tmp_path_factory.mktemp("gate")
    image_npz(d / "train.npz", n=200, seed=0)
    image_npz(d / "held.npz", n=120, seed=5)
    image_npz(d / "new.npz", n=60, seed=6)
    run("train", "--data", d / "train.npz", "--out", d / "m.pt", *TRAIN_SMALL, "--calibration-fraction", "0.2")
    return d


def test_json_states_the_decision_with_typed_fields(trained):
    gate = run_json("score", trained / "new.npz", "--model", trained / "m.pt", "--max-ood-fraction", "0.05",
                    "--quiet")["gate"]
    types = {"passed": bool, "p_value": float, "alpha": float, "confidence": float, "max_ood_fraction": float,
             "n": int, "n_flagged": int, "n_skipped": int, "flag_rate": float, "flag_rate_interval": list,
             "threshold": float, "threshold_from": str, "reference": str, "calibration_n": int, "n_ood": int,
             "ood_fraction": float, "score": str, "tpr": float, "decision": str, "guarantee": str}
    for key, kind in types.items():
        assert isinstance(gate[key], kind), (key, gate[key])
    assert gate["calibration_n"] == 40 and gate["threshold_from"] == "model" and gate["n"] == 60
    assert gate["guarantee"] == "calibration-conditional" and gate["confidence"] == 0.95 and gate["alpha"] == 0.01
    low, high = gate["flag_rate_interval"]
    assert low < gate["flag_rate"] == 3 / 41 < high  # 40 scores at TPR 0.95: the 38th largest, j = 3
    marginal = run_json("score", trained / "new.npz", "--model", trained / "m.pt", "--max-ood-fraction", "0.05",
                        "--marginal", "--quiet")["gate"]
    assert marginal["guarantee"] == "marginal" and marginal["confidence"] is None
    assert marginal["p_value"] <= gate["p_value"]  # the marginal test assumes a lower flag rate: more power


@pytest.mark.parametrize("option, value", [("--alpha", "nan"), ("--alpha", "0"), ("--alpha", "1.5"),
                                           ("--confidence", "1"), ("--confidence", "0"), ("--fdr", "-1"),
                                           ("--fdr", "nan")])
def test_bad_test_settings_are_a_one_line_usage_error(trained, option, value):
    one_line_error(run("score", trained / "new.npz", "--model", trained / "m.pt", "--max-ood-fraction", "0.05",
                       option, value, code=2), option)


def test_a_model_without_calibration_gates_only_with_reference_and_says_so(trained, tmp_path):
    flow, _ = load_checkpoint(trained / "m.pt")
    save_model(flow, tmp_path / "bare.pt")
    err = one_line_error(run("score", trained / "new.npz", "--model", tmp_path / "bare.pt", "--max-ood-fraction",
                             "0.1", code=2), "carries no calibration", "oodflow calibrate", "--reference")
    assert "older oodflow" in err
    run("score", trained / "held.npz", "--model", tmp_path / "bare.pt", "--out", tmp_path / "s.h5", "--name", "ref",
        "--quiet")
    gate = run_json("score", trained / "new.npz", "--model", tmp_path / "bare.pt", "--max-ood-fraction", "0.5",
                    "--reference", f"{tmp_path / 's.h5'}:ref", "--quiet")["gate"]
    assert gate["threshold_from"] == "reference" and gate["calibration_n"] == 120


def test_unreadable_files_count_as_flagged_and_are_listed(trained, tmp_path):
    folder = tmp_path / "incoming"
    folder.mkdir()
    images = np.load(trained / "new.npz")["x"]
    for i in range(20):
        Image.fromarray(images[i]).save(folder / f"{i:02d}.png")
    (folder / "zz-bad.png").write_bytes(b"not a png")
    args = ["score", folder, "--model", trained / "m.pt", "--max-ood-fraction", "0.05", "--skip-invalid"]
    gate = run_json(*args, "--quiet")["gate"]
    flagged_readable = gate["n_ood"]
    assert gate["n"] == 21 and gate["n_skipped"] == 1 and gate["n_flagged"] == flagged_readable + 1
    assert gate["skipped_files"][0]["path"].endswith("zz-bad.png")
    rows = run(*args, "--flags", "--quiet").stdout.splitlines()
    assert rows[-1].startswith(str(folder / "zz-bad.png")) and rows[-1].split("\t")[1] == "OOD"


def test_settings_that_differ_from_the_calibration_are_refused_naming_them(trained):
    base = ["score", trained / "new.npz", "--model", trained / "m.pt", "--max-ood-fraction", "0.1"]
    one_line_error(run(*base, "--dequant-samples", "4", code=2), "--dequant-samples 4 (calibrated with 1)")
    one_line_error(run(*base, "--resize", code=2), "--resize (calibrated without)")
    run(*base, "--seed", "3", "--quiet")  # another dequantization seed draws exchangeable noise: fine


def test_calibrate_stores_a_calibration_and_leaves_the_weights_and_their_score_files_valid(trained, tmp_path):
    model = tmp_path / "m.pt"
    model.write_bytes((trained / "m.pt").read_bytes())
    before = read_model_file(model)
    run("score", trained / "held.npz", "--model", model, "--out", tmp_path / "s.h5", "--name", "ref", "--quiet")
    one_line_error(run("calibrate", trained / "held.npz", "--model", model, code=1), "m.pt's calibration (40 scores",
                   "exists; pass --overwrite to replace it")
    one_line_error(run("calibrate", trained / "train.npz", "--model", model, "--overwrite", "--limit", "50", code=2),
                   "was trained on this data")
    run("calibrate", trained / "held.npz", "--model", model, "--overwrite", "--quiet")
    after = read_model_file(model)
    assert all(after["state_dict"][k].equal(v) for k, v in before["state_dict"].items())
    flow, extra = load_checkpoint(model)
    cal = extra["calibration"]
    assert cal["origin"] == "calibrate" and cal["n"] == 120 and cal["model_digest"] == model_digest(flow)
    scores = store.read_scores(tmp_path / "s.h5", "ref")
    np.testing.assert_allclose(cal["values"], np.sort(scores))  # scored exactly as score scores
    gate = run_json("score", trained / "new.npz", "--model", model, "--reference", f"{tmp_path / 's.h5'}:ref",
                    "--max-ood-fraction", "0.5", "--quiet")["gate"]  # a group scored before calibrate still gates
    assert gate["threshold_from"] == "reference"
    info = run_json("info", model)
    assert info["calibration"]["n"] == 120 and info["calibration"]["origin"] == "calibrate"
    assert info["calibration"]["settings"]["dequant_samples"] == 1
    run("calibrate", trained / "held.npz", "--model", model, "--overwrite", "--dequant-samples", "2", "--quiet")
    run("score", trained / "new.npz", "--model", model, "--max-ood-fraction", "0.5", "--dequant-samples", "2", "-q")
    one_line_error(run("score", trained / "new.npz", "--model", model, "--max-ood-fraction", "0.5", code=2),
                   "--dequant-samples 1 (calibrated with 2)")


def test_calibrate_refuses_bn_train_and_a_model_being_trained(trained, tmp_path):
    from ood_flow.fileio import file_lock

    one_line_error(run("calibrate", trained / "held.npz", "--model", trained / "m.pt", "--method", "bn-train",
                       "--overwrite", code=2), "depend on the batch")
    model = tmp_path / "m.pt"
    model.write_bytes((trained / "m.pt").read_bytes())
    before = model.read_bytes()
    with file_lock(model, timeout=0):  # as a training run holds it; a second command runs in another process
        result = subprocess.run([sys.executable, "-m", "ood_flow", "calibrate", str(trained / "held.npz"), "--model",
                                 str(model), "--overwrite", "--quiet"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "is being written by process" in result.stderr
    assert model.read_bytes() == before


def test_resume_replaces_a_calibration_that_no_longer_matches_the_weights(tmp_path):
    image_npz(tmp_path / "train.npz", n=200, seed=0)
    image_npz(tmp_path / "held.npz", n=50, seed=5)
    common = ["train", "--data", tmp_path / "train.npz", "--out", tmp_path / "m.pt", "--channels", "4", "--blocks",
              "1", "--batch-size", "16", "--quiet"]
    run(*common, "--epochs", "1")
    run("calibrate", tmp_path / "held.npz", "--model", tmp_path / "m.pt", "--overwrite", "--quiet")
    run(*common, "--epochs", "2", "--resume")
    flow, extra = load_checkpoint(tmp_path / "m.pt")
    assert extra["calibration"]["origin"] == "train" and extra["calibration"]["model_digest"] == model_digest(flow)
    assert extra["steps"] == extra["calibration"]["step"]

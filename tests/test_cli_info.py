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


def test_a_long_group_name_is_shown_whole_in_a_narrow_terminal(tmp_path):
    """The table cut long group names with an ellipsis at 80 columns, and the name is what --in and --ood take."""
    name = "fashionmnist-test-held-out-evaluation-split-from-the-long-running-pipeline"
    store.write_group(tmp_path / "s.h5", name, {"log_likelihood": np.zeros(3), "id": np.arange(3)}, {"model": "m.pt"})
    table = run("info", tmp_path / "s.h5").stdout  # the test runner's terminal: 80 columns
    cells = [line.split("│")[1].strip() for line in table.splitlines() if line.startswith("│")]
    assert "".join(cells).startswith(name)


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


def _readable(text: str) -> None:
    """Every line fits 80 columns, except a key whose value is one word (a hash, a path)."""
    for line in text.splitlines():
        assert len(line) <= 80 or " " not in line.split(": ", 1)[-1], f"{len(line)} columns: {line!r}"


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    """A Gaussian detector on a tiny random timm backbone's features (nothing from the network)."""
    import timm

    d = tmp_path_factory.mktemp("detector")
    torch.manual_seed(0)
    torch.save(timm.create_model("test_resnet", pretrained=False, num_classes=0).state_dict(), d / "w.pth")
    image_npz(d / "in.npz", n=60, size=20)
    run("train", "--data", d / "in.npz", "--features", "test_resnet", "--weights", d / "w.pth", "--image-size", "32",
        "--model", "gaussian", "--out", d / "det.pt", "--quiet")
    return d


def test_a_detector_shows_its_backbone_weights_transform_and_standardization(detector):
    info = run_json("info", detector / "det.pt")
    record = torch.load(detector / "det.pt", weights_only=True)["extra"]["detector"]
    det = info["detector"]
    assert det["backbone"] == "test_resnet" and det["weights_sha256"] == record["backbone_sha256"]
    assert det["weights"] == f"the file {(detector / 'w.pth').resolve()}, recorded at training (found)"
    assert det["transform"] == {"size": "32x32 px, resized whole (not cropped)", "interpolation": "bilinear",
                                "mean": record["transform"]["mean"], "std": record["transform"]["std"]}
    assert det["features"].startswith(f"{record['feature_dim']} per image, standardized by the training split's")
    assert "floored at 1 x the median column std" in det["features"]
    assert info["input"].startswith("images of any size, resized to 32x32 px and embedded by test_resnet")
    assert info["calibration"]["n"] == 3 and "calibration split" in info["calibration"]["source"]
    text = run("info", detector / "det.pt").stdout
    assert "detector:\n  backbone: test_resnet\n" in text and "  transform:\n    size: 32x32 px" in text
    _readable(text)


def test_a_closed_form_fit_shows_no_preset_or_optimiser_it_never_used(detector):
    info = run_json("info", detector / "det.pt")
    assert "preset" not in info and set(info["train_config"]) == {"seed", "val_fraction", "cal_fraction"}
    assert (info["status"], info["state"]) == ("fitted", "fitted in closed form (no gradient steps)")
    text = run("info", detector / "det.pt").stdout
    assert "adamw" not in text and "lr:" not in text and "preset" not in text


def test_missing_backbone_weights_say_how_to_get_them(detector, tmp_path, monkeypatch):
    from ood_flow.embed.detector import detector_info

    record = torch.load(detector / "det.pt", weights_only=True)["extra"]["detector"]
    moved = {**record, "weights_file": str(tmp_path / "gone.pth")}
    assert detector_info(moved, 1.0)["weights"].endswith("(missing: pass the same weights with --weights FILE)")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    hub = detector_info({**record, "backbone": "resnet18", "weights_file": None}, 1.0)["weights"]
    assert hub.startswith("timm's pretrained weights, not on this machine: pass a local state dict (--weights FILE)")
    assert str(tmp_path / "hub") in hub


def test_the_state_of_a_finished_run(trained):
    info = run_json("info", trained / "m.pt")
    assert (info["status"], info["state"]) == ("finished", "finished after 3 steps")
    lines = run("info", trained / "m.pt").stdout.splitlines()
    assert "state: finished after 3 steps" in lines and not any(line.startswith("status:") for line in lines)


def test_the_state_of_an_interrupted_run_names_the_step_of_how_many_and_the_signal(tmp_path):
    import os
    import signal

    from ood_flow import train_flow
    from ood_flow.train import TrainConfig, TrainEvents

    def on_step(step, metrics):
        if step == 2:
            os.kill(os.getpid(), signal.SIGINT)

    image_npz(tmp_path / "x.npz", n=40, size=8)
    train_flow(str(tmp_path / "x.npz"), TrainConfig(lr=1e-3, batch_size=8, epochs=2), out=tmp_path / "m.pt",
               model_options={"channels": 4, "blocks": 1}, events=TrainEvents(on_step=on_step))
    for name in ("m.pt", "m.ckpt.pt"):
        info = run_json("info", tmp_path / name)
        assert info["status"] == "interrupted" and info["state"].startswith("interrupted at step 2 of 8 by SIGINT")


def test_the_state_of_a_run_stopped_early_names_the_epoch_kept(tmp_path):
    image_npz(tmp_path / "x.npz", n=40, size=8)
    run("train", "--data", tmp_path / "x.npz", "--out", tmp_path / "m.pt", *TRAIN_SMALL[:-3], "--epochs", "5",
        "--patience", "1", "--min-delta", "100", "--quiet")  # never 100 bits/dim better: stops after epoch 2
    info = run_json("info", tmp_path / "m.pt")
    assert info["status"] == "stopped_early"
    assert info["state"] == ("stopped early at epoch 2 (validation bits/dim stopped improving), keeping epoch 1's "
                             "weights")


@pytest.mark.parametrize("extra, status, state", [
    ({"steps": 50, "total_steps": 100, "stopped_by": None}, "interrupted", "interrupted at step 50 of 100 (killed"),
    ({"steps": 50, "total_steps": 100, "stopped_by": "diverged"}, "diverged", "diverged at step 50 of 100"),
    ({"steps": 7, "train_config": {"epochs": 3, "max_steps": 7}}, "finished", "finished after 7 steps"),
    ({"steps": 7}, "unknown", "step 7; the file does not record"),
])
def test_run_state_from_what_the_file_records(extra, status, state):
    from ood_flow.info import run_state

    got = run_state(extra, extra["steps"], closed_form=False)
    assert got["status"] == status and got["state"].startswith(state)


def test_plain_text_prints_nested_settings_as_indented_lines(trained):
    text = run("info", trained / "m.pt").stdout
    assert "train config:\n  epochs: 1\n" in text and "\n  optimizer: adam\n" in text
    _readable(text)

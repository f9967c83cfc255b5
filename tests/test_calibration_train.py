"""Every model file carries the log-likelihoods of its validation split: a threshold without --reference."""

from __future__ import annotations

import numpy as np
import pytest

from cli_helpers import image_npz, run_json
from ood_flow.data import load_source
from ood_flow.flows import load_checkpoint
from ood_flow.score.likelihood import score_likelihood
from ood_flow.train.objective import split_validation


@pytest.mark.parametrize("kind", ["vectors", "images"])
def test_the_model_file_holds_its_validation_scores_under_its_final_weights(tmp_path, kind):
    if kind == "vectors":
        np.save(tmp_path / "d.npy", np.random.default_rng(0).normal(size=(400, 4)).astype(np.float32))
        data, args = tmp_path / "d.npy", ["--model", "tabular", "--hidden", "8"]
    else:
        image_npz(tmp_path / "d.npz", n=200)
        data, args = tmp_path / "d.npz", ["--model", "realnvp", "--channels", "4", "--blocks", "1"]
    run_json("train", "--data", data, "--out", tmp_path / "m.pt", "--epochs", "2", "--val-fraction", "0.1",
             "--seed", "3", *args)
    flow, extra = load_checkpoint(tmp_path / "m.pt")
    ref = extra["reference"]
    ds = load_source(str(data))
    _, val = split_validation(len(ds), 0.1, 3)
    want = score_likelihood(flow, ds.x[val], val, seed=3)["log_likelihood"]
    assert ref["score"] == "log_likelihood" and ref["n"] == len(val) == len(ref["values"])
    np.testing.assert_allclose(ref["values"], np.sort(want), rtol=1e-6)
    assert ref["step"] == extra["steps"]


def test_no_validation_split_no_reference(tmp_path):
    np.save(tmp_path / "d.npy", np.random.default_rng(0).normal(size=(100, 4)).astype(np.float32))
    run_json("train", "--data", tmp_path / "d.npy", "--model", "gaussian", "--out", tmp_path / "g.pt",
             "--val-fraction", "0")
    assert load_checkpoint(tmp_path / "g.pt")[1]["reference"] is None


def test_model_gate_keeps_the_tpr_of_the_stored_scores_and_says_where_they_came_from():
    from ood_flow.errors import UsageError
    from ood_flow.score.gate import model_gate

    extra = {"reference": {"score": "log_likelihood", "split": "validation", "n": 20, "step": 7,
                           "values": [float(v) for v in range(20)]}}
    g = model_gate(extra, 0.95, score="log_likelihood", model="m.pt")
    assert g.threshold == 1.0 and g.n_reference == 20 and "m.pt's validation split (20 samples)" in g.reference
    with pytest.raises(UsageError, match="carries a threshold on log_likelihood, not on waic"):
        model_gate(extra, 0.95, score="waic", model="m.pt")
    with pytest.raises(UsageError, match="carries no threshold"):
        model_gate({"reference": None}, 0.95, score="log_likelihood", model="m.pt")


def test_early_stopping_keeps_the_best_epoch_and_its_validation_scores(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "d.npy", rng.normal(size=(60, 6)).astype(np.float32))  # few samples: it over-fits
    run_json("train", "--data", tmp_path / "d.npy", "--model", "tabular", "--hidden", "64", "--lr", "1e-2",
             "--batch-size", "16", "--epochs", "60", "--patience", "3", "--val-fraction", "0.3", "--out",
             tmp_path / "m.pt")
    flow, extra = load_checkpoint(tmp_path / "m.pt")
    val_bpd = [h["val_bpd"] for h in extra["history"]]
    best = int(np.argmin(val_bpd)) + 1
    assert extra["best_epoch"] == best and len(val_bpd) == best + 3 < 60  # stopped 3 epochs after the best
    ds = load_source(str(tmp_path / "d.npy"))
    _, val = split_validation(len(ds), 0.3, 0)
    scores = score_likelihood(flow, ds.x[val], val, seed=0)
    np.testing.assert_allclose(float(scores["bits_per_dim"].mean()), val_bpd[best - 1], rtol=1e-5)
    np.testing.assert_allclose(extra["reference"]["values"], np.sort(scores["log_likelihood"]), rtol=1e-6)


def test_feature_flows_train_with_appendix_k1_defaults():
    from ood_flow.train import TrainConfig

    cfg = TrainConfig().resolved("features")
    assert (cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.batch_size, cfg.epochs, cfg.patience) == \
        ("adamw", 1e-3, 1e-3, 1024, 120, 10)
    assert TrainConfig().resolved("tabular").patience == 0
    assert TrainConfig(patience=0).resolved("features").patience == 0

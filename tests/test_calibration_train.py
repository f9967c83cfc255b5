"""Every model file train writes carries the calibration of exactly its weights, or none and why."""

from __future__ import annotations

import numpy as np
import pytest

from cli_helpers import image_npz, run_json
from ood_flow.data import load_source
from ood_flow.flows import load_checkpoint
from ood_flow.flows.io import model_digest
from ood_flow.score.likelihood import score_likelihood
from ood_flow.train.objective import split_holdout


@pytest.mark.parametrize("kind", ["vectors", "images"])
def test_the_model_file_holds_its_calibration_scores_under_its_final_weights(tmp_path, kind):
    if kind == "vectors":
        np.save(tmp_path / "d.npy", np.random.default_rng(0).normal(size=(400, 4)).astype(np.float32))
        data, args = tmp_path / "d.npy", ["--model", "tabular", "--hidden", "8"]
    else:
        image_npz(tmp_path / "d.npz", n=200)
        data, args = tmp_path / "d.npz", ["--model", "realnvp", "--channels", "4", "--blocks", "1"]
    run_json("train", "--data", data, "--out", tmp_path / "m.pt", "--epochs", "2", "--val-fraction", "0.1",
             "--calibration-fraction", "0.15", "--seed", "3", *args)
    flow, extra = load_checkpoint(tmp_path / "m.pt")
    cal = extra["calibration"]
    ds = load_source(str(data))
    _, val, held = split_holdout(len(ds), 0.1, 0.15, 3)
    want = score_likelihood(flow, ds.x[held], held, seed=3)["log_likelihood"]
    assert cal["score"] == "log_likelihood" and cal["n"] == len(held) == len(cal["values"]) == int(0.15 * len(ds))
    np.testing.assert_allclose(cal["values"], np.sort(want), rtol=1e-6)
    assert cal["step"] == extra["steps"] and cal["model_digest"] == model_digest(flow)
    assert cal["origin"] == "train" and f"calibration split: {len(held)} of {len(ds)} samples" in cal["source"]
    assert cal["settings"]["dequant_samples"] == 1 and cal["settings"]["precision"] == "fp32"
    assert extra["calibration_note"] is None


def test_splits_are_disjoint_and_the_validation_split_is_unchanged_by_calibration():
    train, val, cal = split_holdout(1000, 0.05, 0.1, seed=3)
    assert len(val) == 50 and len(cal) == 100 and len(train) == 850
    assert not (set(train.tolist()) & set(val.tolist()) or set(train.tolist()) & set(cal.tolist())
                or set(val.tolist()) & set(cal.tolist()))
    assert set(train.tolist()) | set(val.tolist()) | set(cal.tolist()) == set(range(1000))
    assert split_holdout(1000, 0.05, 0.0, seed=3)[1].tolist() == val.tolist()  # the same validation split either way
    assert [len(t) for t in split_holdout(10, 0.5, 0.5, 0)] == [10, 0, 0]  # none held out below 20 samples
    assert len(split_holdout(100_000, 0.5, 0.5, 0)[2]) == 2000  # at most 2000 each


def test_no_calibration_split_no_calibration_and_the_reason(tmp_path):
    np.save(tmp_path / "d.npy", np.random.default_rng(0).normal(size=(100, 4)).astype(np.float32))
    run_json("train", "--data", tmp_path / "d.npy", "--model", "gaussian", "--out", tmp_path / "g.pt",
             "--calibration-fraction", "0")
    extra = load_checkpoint(tmp_path / "g.pt")[1]
    assert extra["calibration"] is None and "without a calibration split" in extra["calibration_note"]


def test_a_snapshot_within_an_epoch_carries_no_calibration_of_other_weights(tmp_path):
    """A model file written mid-epoch holds weights never scored on the calibration split: no calibration,
    and the note says why; a finished epoch's file carries one again."""
    from ood_flow.flows.models import create_flow
    from ood_flow.train import TrainConfig, Trainer
    from ood_flow.train.calibration import for_model_file

    flow = create_flow("tabular", (4,), couplings=2, hidden=8, layers=1)
    x = __import__("torch").randn(200, 4)
    t = Trainer(flow, x, TrainConfig(epochs=1, batch_size=16, cal_fraction=0.2), tmp_path / "m.pt")
    t.fit_preprocessing()
    t.validate()
    assert t.calibration["model_digest"] == model_digest(flow)
    record, note = for_model_file(t.calibration, flow, None, step=0, interrupted=False, has_split=True)
    assert record is t.calibration and note is None
    t.run()  # steps change the weights; the end of the epoch scores the split again
    assert t.calibration["model_digest"] == model_digest(flow)
    stale = {**t.calibration, "model_digest": "0" * 64}
    record, note = for_model_file(stale, flow, None, step=7, interrupted=True, has_split=True)
    assert record is None and "step 7, written on interruption" in note and "--resume" in note


def test_early_stopping_keeps_the_best_epoch_and_the_calibration_of_its_weights(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "d.npy", rng.normal(size=(80, 6)).astype(np.float32))  # few samples: it over-fits
    run_json("train", "--data", tmp_path / "d.npy", "--model", "tabular", "--hidden", "64", "--lr", "1e-2",
             "--batch-size", "16", "--epochs", "60", "--patience", "3", "--val-fraction", "0.3",
             "--calibration-fraction", "0.25", "--out", tmp_path / "m.pt")
    flow, extra = load_checkpoint(tmp_path / "m.pt")
    val_bpd = [h["val_bpd"] for h in extra["history"]]
    best = int(np.argmin(val_bpd)) + 1
    assert extra["best_epoch"] == best and len(val_bpd) == best + 3 < 60  # stopped 3 epochs after the best
    ds = load_source(str(tmp_path / "d.npy"))
    _, val, held = split_holdout(len(ds), 0.3, 0.25, 0)
    np.testing.assert_allclose(float(score_likelihood(flow, ds.x[val], val, seed=0)["bits_per_dim"].mean()),
                               val_bpd[best - 1], rtol=1e-5)
    scores = score_likelihood(flow, ds.x[held], held, seed=0)["log_likelihood"]
    np.testing.assert_allclose(extra["calibration"]["values"], np.sort(scores), rtol=1e-6)
    assert extra["calibration"]["model_digest"] == model_digest(flow)


def test_feature_flows_train_with_appendix_k1_defaults():
    from ood_flow.train import TrainConfig

    cfg = TrainConfig().resolved("features")
    assert (cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.batch_size, cfg.epochs, cfg.patience) == \
        ("adamw", 1e-3, 1e-3, 1024, 120, 10)
    assert TrainConfig().resolved("tabular").patience == 0
    assert TrainConfig(patience=0).resolved("features").patience == 0

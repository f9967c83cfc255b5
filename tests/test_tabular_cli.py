"""``train --model tabular`` through the CLI: CSV with a label column, stored standardization, MAF formats.

The one-class table has a nonlinear dependency (b = a**2 + noise) and columns of wildly different
scales: a flow that learns beats the diagonal Gaussian that standardization alone gives, and the
other class (b = -0.5 - a**2) is detected.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from cli_helpers import one_line_error, run, run_json
from ood_flow import load_model, store

SCALES = np.array([1.0, 100.0, 0.01, 1000.0])
FAST = ["--hidden", "32", "--batch-size", "64", "--quiet"]


def _table(n: int, seed: int) -> np.ndarray:
    """Rows (a, b, c, d, target): class 0 has b = a^2, class 1 has b = -0.5 - a^2 (both + small noise)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    a = rng.normal(size=n)
    b = np.where(y == 0, a**2, -0.5 - a**2) + 0.1 * rng.normal(size=n)
    feats = np.stack([a, b, rng.normal(size=n), rng.normal(size=n)], axis=1) * SCALES + [0, 0, 5, -3000]
    return np.column_stack([feats, y])


def _write(path, table) -> None:
    np.savetxt(path, table, delimiter=",", header="a,b,c,d,target", comments="", fmt="%.8g")


def _diag_gaussian_ll(train: np.ndarray, test: np.ndarray) -> float:
    mu, sd = train.mean(0), train.std(0)
    return float(np.mean(np.sum(-0.5 * ((test - mu) / sd) ** 2 - np.log(sd) - 0.5 * math.log(2 * math.pi), axis=1)))


@pytest.fixture(scope="module")
def one_class(tmp_path_factory):
    d = tmp_path_factory.mktemp("tabular")
    train, test = _table(1600, seed=0), _table(400, seed=1)
    _write(d / "train.csv", train)
    _write(d / "test.csv", test)
    summary = run_json("train", "--data", d / "train.csv", "--label-column", "target", "--class", "0",
                       "--model", "tabular", "--out", d / "m.pt", "--epochs", "16", "--lr", "3e-3",
                       "--val-fraction", "0", "--calibration-fraction", "0", *FAST)
    for name, cls in (("in", "0"), ("out", "1")):
        run("score", d / "test.csv", "--label-column", "target", "--class", cls, "--model", d / "m.pt",
            "--out", d / "s.h5", "--name", name, "--quiet")
    return d, train, test, summary


def test_standardization_statistics_are_fitted_on_the_class_and_stored(one_class):
    d, train, _, summary = one_class
    rows = train[train[:, 4] == 0, :4]
    assert summary["n_train"] == len(rows) == 800 and summary["n_val"] == summary["n_calibration"] == 0
    flow = load_model(d / "m.pt")
    pre = flow.preprocess
    assert flow.input_shape == (4,) and bool(pre.fitted)
    assert np.allclose(pre.mean.numpy(), rows.mean(0), rtol=1e-4, atol=1e-4 * SCALES)
    assert np.allclose(pre.log_std.exp().numpy(), rows.std(0), rtol=1e-3)


def test_the_flow_learns_more_than_standardization(one_class):
    d, train, test, _ = one_class
    ll = store.read_scores(d / "s.h5", "in")
    baseline = _diag_gaussian_ll(train[train[:, 4] == 0, :4], test[test[:, 4] == 0, :4])
    assert ll.shape == (200,) and np.isfinite(ll).all()
    assert ll.mean() > baseline + 1.0, (ll.mean(), baseline)  # b = a^2 is worth up to ~2.6 nats


def test_the_other_class_is_detected(one_class):
    d = one_class[0]
    result = run_json("evaluate", d / "s.h5", "--in", "in", "--ood", "out")
    assert result["ood"]["out"]["auroc"] > 0.95


def test_columns_choose_the_features(one_class, tmp_path):
    d = one_class[0]
    run("train", "--data", d / "train.csv", "--columns", "a,b", "--label-column", "target", "--class", "0",
        "--out", tmp_path / "ab.pt", "--epochs", "1", *FAST)
    assert load_model(tmp_path / "ab.pt").input_shape == (2,)
    run("score", d / "test.csv", "--columns", "a,b", "--model", tmp_path / "ab.pt", "--out", tmp_path / "s.h5",
        "--quiet")
    one_line_error(run("score", d / "test.csv", "--model", tmp_path / "ab.pt", "--out", tmp_path / "s.h5",
                       "--name", "all", "--quiet", code=1), "ab.pt was trained on 2-dimensional vectors",
                   "these are 5-dimensional vectors")
    one_line_error(run("train", "--data", d / "train.csv", "--columns", "a,zz", "--out", tmp_path / "x.pt",
                       "--quiet", code=1), "no column 'zz'")
    one_line_error(run("train", "--data", d / "train.csv", "--label-column", "target", "--class", "7",
                       "--out", tmp_path / "x.pt", "--quiet", code=1), "no sample has label '7'")


def test_miniboone_maf_file_trains_and_scores(tmp_path):
    (tmp_path / "miniboone").mkdir()
    rng = np.random.default_rng(0)
    np.save(tmp_path / "miniboone" / "data.npy", rng.normal(size=(300, 43)) * rng.uniform(0.1, 10, 43))
    summary = run_json("train", "--data", "miniboone", "--data-dir", tmp_path, "--out", tmp_path / "m.pt",
                       "--epochs", "1", *FAST)
    # MAF: the last 10% is test, the last 10% of the rest val
    assert summary["family"] == "tabular" and summary["n_train"] + summary["n_val"] + summary["n_calibration"] == 243
    run("score", "miniboone", "--data-dir", tmp_path, "--model", tmp_path / "m.pt", "--out", tmp_path / "s.h5",
        "--quiet")
    assert store.read_scores(tmp_path / "s.h5", "miniboone-test").shape == (30,)


def test_hepmass_maf_files_train_and_score(tmp_path):
    folder = tmp_path / "hepmass"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, extra in (("1000_train.csv", 0), ("1000_test.csv", 1)):
        n = 90
        cols = [(np.arange(n) % 3 != 0).astype(float), *rng.normal(size=(3, n)), rng.integers(0, 2, n).astype(float),
                np.full(n, 1000.0), *rng.normal(size=(extra, n))]
        header = "# label,f0,f1,f2,f3,mass" + (",junk" if extra else "")
        np.savetxt(folder / name, np.stack(cols, 1), delimiter=",", header=header, comments="")
    summary = run_json("train", "--data", "hepmass", "--data-dir", tmp_path, "--out", tmp_path / "h.pt",
                       "--epochs", "1", *FAST)
    assert summary["n_train"] + summary["n_val"] + summary["n_calibration"] == 54  # 60 signal rows, MAF keeps 90%
    assert load_model(tmp_path / "h.pt").input_shape == (3,)  # the discrete f3 and the constant mass are dropped
    run("score", "hepmass:test", "--data-dir", tmp_path, "--model", tmp_path / "h.pt", "--out", tmp_path / "s.h5",
        "--quiet")
    assert store.read_scores(tmp_path / "s.h5", "hepmass-test").shape == (60,)

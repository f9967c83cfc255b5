"""`oodflow score --method ...`, the gate and `oodflow evaluate --score/--all-scores/--typicality` via CliRunner."""

from __future__ import annotations

import json
import math
import re

import h5py
import numpy as np
import pytest
import torch

from cli_helpers import TRAIN_SMALL, image_npz, one_line_error, run, run_json
from helpers import randomize
from ood_flow import store
from ood_flow.evaluate import threshold_at_tpr
from ood_flow.flows import create_flow
from ood_flow.flows.io import load_checkpoint, save_model

ALL = ["--method", "likelihood", "--method", "complexity", "--method", "likelihood-ratio", "--method", "bn-train",
       "--method", "waic"]


def collapsed(text: str) -> str:
    """Rich's boxed help or usage error with the box drawing removed and whitespace collapsed."""
    return " ".join(re.sub("[│╭╮╰╯─]", " ", text).split())


def help_text(command: str) -> str:
    return collapsed(run(command, "--help").stdout)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Three random 8x8 flows with batch norm, a background flow, and in/ood/reference sources."""
    d = tmp_path_factory.mktemp("methods")
    for i, name in enumerate(["a", "b", "c", "bg"]):
        torch.manual_seed(i)
        save_model(randomize(create_flow("realnvp", (1, 8, 8), channels=4, blocks=1), seed=i), d / f"{name}.pt")
    image_npz(d / "in.npz", n=40, seed=0)
    image_npz(d / "ref.npz", n=40, seed=2)
    image_npz(d / "ood.npz", n=30, seed=1, bright=0.05)
    models = ["--model", d / "a.pt", "--model", d / "b.pt", "--model", d / "c.pt", "--background-model", d / "bg.pt"]
    scores = d / "s.h5"
    for group in ("in", "ood"):
        run("score", d / f"{group}.npz", *models, *ALL, "--out", scores, "--name", group, "--batch-size", "16",
            "--quiet")
    run("score", d / "ref.npz", "--model", d / "a.pt", "--out", scores, "--name", "ref", "--quiet")
    return d, scores


def test_every_method_is_stored_with_its_provenance(setup):
    d, scores = setup
    arrays, attrs = store.read_group(scores, "in")
    assert {"log_likelihood", "complexity", "compressed_bits", "likelihood_ratio", "background_log_likelihood",
            "bn_train", "waic", "waic_mean", "waic_var"} <= set(arrays)
    np.testing.assert_allclose(arrays["complexity"], arrays["log_likelihood"] / math.log(2) + arrays["compressed_bits"])
    np.testing.assert_allclose(arrays["likelihood_ratio"],
                               arrays["log_likelihood"] - arrays["background_log_likelihood"])
    np.testing.assert_allclose(arrays["waic"], arrays["waic_mean"] - arrays["waic_var"])
    assert attrs["method"] == ["likelihood", "complexity", "likelihood-ratio", "bn-train", "waic"]
    assert attrs["compressor"] == "png" and attrs["ensemble_size"] == 3
    assert attrs["batchnorm"].startswith("train for bn_train") and "batch composition" in attrs["batchnorm"]
    assert attrs["background_model"].endswith("bg.pt") and len(attrs["background_model_sha256"]) == 64
    assert len(attrs["model_sha256"]) == 3


def test_the_likelihood_alone_is_unchanged_by_the_other_methods(setup, tmp_path):
    d, scores = setup
    run("score", d / "in.npz", "--model", d / "a.pt", "--out", tmp_path / "plain.h5", "--name", "in", "--quiet")
    with h5py.File(tmp_path / "plain.h5") as plain, h5py.File(scores) as full:
        np.testing.assert_array_equal(plain["in/log_likelihood"][()], full["in/log_likelihood"][()])
        assert plain["in"].attrs["batchnorm"] == "eval (stored statistics)"


def test_evaluate_compares_every_score_in_one_table(setup):
    d, scores = setup
    report = run_json("evaluate", scores, "--in", "in", "--ood", "ood", "--all-scores")
    assert list(report["by_score"]) == ["log_likelihood", "complexity", "likelihood_ratio", "bn_train", "waic"]
    assert report["score"] == "log_likelihood" and report["ood"] == report["by_score"]["log_likelihood"]
    for name, results in report["by_score"].items():
        m = results["ood"]
        s_in, s_ood = store.read_scores(scores, "in", name), store.read_scores(scores, "ood", name)
        assert m["threshold"] == threshold_at_tpr(s_in, 0.95)
        assert m["fpr_at_tpr"] == np.mean(s_ood >= m["threshold"])
    table = run("evaluate", scores, "--in", "in", "--ood", "ood", "--all-scores", "--tpr", "0.9").stdout
    assert all(name in table for name in report["by_score"]) and "FPR@90%TPR" in table and "threshold" in table
    picked = run_json("evaluate", scores, "--in", "in", "--ood", "ood", "--score", "waic", "--score", "complexity")
    assert list(picked["by_score"]) == ["waic", "complexity"] and picked["score"] == "waic"


def test_evaluate_unknown_score_lists_those_present(setup):
    _, scores = setup
    one_line_error(run("evaluate", scores, "--in", "in", "--ood", "ood", "--score", "llr", code=1),
                   "no score 'llr'", "likelihood_ratio", "waic")


def test_min_auroc_gate_names_the_score(setup):
    _, scores = setup
    result = run("evaluate", scores, "--in", "in", "--ood", "ood", "--all-scores", "--min-auroc", "1", code=3)
    assert "AUROC below --min-auroc 1.0" in result.stderr and "(waic)" in result.stderr


def test_typicality_reports_batch_level_metrics(setup):
    _, scores = setup
    result = run("evaluate", scores, "--in", "in", "--ood", "ood", "--typicality", "--batch-size", "5",
                 "--n-batches", "200", "--json")
    typ = json.loads(result.stdout)["typicality"]
    assert typ["batch_size"] == 5 and typ["reference"] == "in" and "flatters" in typ["note"]
    assert "flatters" in result.stderr
    m = typ["ood"]["ood"]
    assert m["n_in"] == m["n_ood"] == 200 and 0.0 <= m["auroc"] <= 1.0
    assert typ["entropy"] == pytest.approx(-store.read_scores(scores, "in").mean())
    honest = run_json("evaluate", scores, "--in", "in", "--ood", "ood", "--typicality", "--reference-group", "ref")
    assert honest["typicality"]["note"] is None
    assert honest["typicality"]["entropy"] == pytest.approx(-store.read_scores(scores, "ref").mean())
    table = run("evaluate", scores, "--in", "in", "--ood", "ood", "--typicality", "--reference-group", "ref").stdout
    assert "typicality test" in table and "batches of 10" in table
    one_line_error(run("evaluate", scores, "--in", "in", "--ood", "ood", "--typicality", "--reference-group", "ood",
                       code=1), "also an --ood group")


# ---------------------------------------------------------------- the gate


def test_gate_flags_stores_and_passes(setup, tmp_path):
    d, scores = setup
    out = tmp_path / "gate.h5"
    summary = run_json("score", d / "ood.npz", "--model", d / "a.pt", "--out", out, "--reference", f"{scores}:ref",
                       "--tpr", "0.9", "--max-ood-fraction", "1.0", "--quiet")
    arrays, attrs = store.read_group(out, "ood")
    ref = store.read_scores(scores, "ref")
    threshold = threshold_at_tpr(ref, 0.9)
    assert attrs["threshold"] == threshold == summary["gate"]["threshold"]
    assert attrs["threshold_reference"].startswith(f"{scores}:ref") and attrs["threshold_score"] == "log_likelihood"
    np.testing.assert_array_equal(arrays["is_ood"], arrays["log_likelihood"] < threshold)
    want_p = [(1 + np.sum(ref <= s)) / (len(ref) + 1) for s in arrays["log_likelihood"]]
    np.testing.assert_allclose(arrays["p_value"], want_p)
    assert summary["gate"]["ood_fraction"] == attrs["ood_fraction"] == np.mean(arrays["is_ood"])
    assert attrs["gate_decision"]["passed"] is True and summary["gate"]["passed"] is True  # F = 1: nothing can fail
    assert attrs["gate_rule"] == "batch test" and summary["gate"]["p_value"] == 1.0
    assert "samples" not in summary and "p_value" not in summary["scores"]


def test_gate_fails_with_exit_3_after_saving_exactly_when_the_test_finds_evidence(setup, tmp_path):
    """The CLI's decision is the batch test's (:func:`batch_p_value`, checked against simulation in
    test_gate_statistics.py), on the flags it stores; it fails only after saving."""
    from ood_flow.score.evidence import batch_p_value

    d, scores = setup
    out = tmp_path / "gate.h5"
    common = ["--model", d / "a.pt", "--reference", f"{scores}:ref", "--tpr", "0.8"]
    summary = run_json("score", d / "ood.npz", *common, "--quiet")  # no --out: print only
    x, m = summary["gate"]["n_ood"], summary["n"]
    assert summary["file"] is None and 0 < x < m, "the fixture should flag some but not all samples"
    for fraction in (0.0, 0.5, 0.8):
        p = batch_p_value(x, m, fraction, 9, 40, 0.95)  # 40 reference scores, the 32nd largest: j = 9
        args = ["score", d / "ood.npz", *common, "--max-ood-fraction", str(fraction), "--quiet"]
        if p <= 0.01:
            result = run(*args, "--out", out, "--name", f"f{fraction}", code=3)
            err = result.stderr.strip()
            assert err.startswith(f"error: f{fraction}: {x} of {m} flagged") and "fail" in err and "\n" not in err
            assert "evidence that more than" in result.stdout
            assert store.read_group(out, f"f{fraction}")[1]["gate_decision"]["passed"] is False  # saved first
        else:
            assert run_json(*args, "--json")["gate"]["passed"] is True
    assert batch_p_value(x, m, 0.0, 9, 40, 0.95) <= 0.01, "the fixture should fail at F = 0"
    assert batch_p_value(x, m, 0.8, 9, 40, 0.95) > 0.01, "and pass at F = 0.8"


def test_a_batch_too_small_to_fail_says_so_and_names_the_smallest_that_can(setup):
    d, scores = setup
    common = ["score", d / "ood.npz", "--model", d / "a.pt", "--reference", f"{scores}:ref"]
    small = run(*common, "--limit", "1", "--max-ood-fraction", "0.05")
    lines = [line for line in small.stderr.splitlines() if line.startswith("warning:")]
    assert len(lines) == 1 and "a batch of 1 cannot fail this gate" in lines[0]
    assert "the smallest batch that can fail is 3" in lines[0]  # Beta(3, 38)'s 95% quantile: 0.17**2 > 0.01 > 0.17**3
    gate = run_json(*common, "--limit", "1", "--max-ood-fraction", "0.05", "--json")["gate"]
    assert gate["warning"] == lines[0] and gate["can_fail"] is False and gate["smallest_failing_batch"] == 3
    big = run_json(*common, "--max-ood-fraction", "0.05", "--json")["gate"]
    assert big["warning"] is None and big["can_fail"] is True


def test_gate_prints_per_sample_flags_as_tsv_rows_and_the_summary_on_stderr(setup):
    d, scores = setup
    args = ["score", d / "ood.npz", "--model", d / "a.pt", "--reference", f"{scores}:in", "--flags"]
    summary = json.loads(run(*args, "--json", "--quiet").stdout)
    samples = summary["samples"]
    assert [s["id"] for s in samples] == [str(i) for i in range(30)]
    assert [s["is_ood"] for s in samples] == [s["score"] < summary["gate"]["threshold"] for s in samples]
    assert all(0 < s["p_value"] <= 1 for s in samples)
    result = run(*args)
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "id\tis_ood\tlog_likelihood\tp_value" and len(lines) == 31  # a header, then data only
    assert lines[1].split("\t")[0] == "0" and lines[1].split("\t")[1] in ("OOD", "in")
    assert "flagged" in result.stderr and "flagged" not in result.stdout


def test_fdr_flags_by_benjamini_hochberg_and_leaves_the_decision_to_the_threshold(setup):
    from ood_flow.score.evidence import benjamini_hochberg

    d, scores = setup
    args = ["score", d / "ood.npz", "--model", d / "a.pt", "--reference", f"{scores}:ref", "--tpr", "0.8",
            "--flags", "--json", "--quiet"]
    plain = run_json(*args, "--max-ood-fraction", "0.8")
    fdr = run_json(*args, "--max-ood-fraction", "0.8", "--fdr", "0.2")
    p = [s["p_value"] for s in fdr["samples"]]
    assert [s["is_ood"] for s in fdr["samples"]] == benjamini_hochberg(p, 0.2).tolist()
    assert [s["is_ood"] for s in fdr["samples"]] != [s["is_ood"] for s in plain["samples"]]  # it changed the flags
    assert fdr["gate"]["flags_by"] == "Benjamini-Hochberg at FDR 0.2"
    for key in ("n_flagged", "p_value", "passed"):  # the batch decision is the threshold's, whatever flags samples
        assert fdr["gate"][key] == plain["gate"][key]


def test_gate_on_another_score(setup, tmp_path):
    d, scores = setup
    summary = run_json("score", d / "ood.npz", "--model", d / "a.pt", "--model", d / "b.pt", "--model", d / "c.pt",
                       "--method", "waic", "--reference", f"{scores}:in", "--quiet")
    assert summary["gate"]["score"] == "waic"
    assert summary["gate"]["threshold"] == threshold_at_tpr(store.read_scores(scores, "in", "waic"), 0.95)
    one_line_error(run("score", d / "ood.npz", "--model", d / "b.pt", "--method", "waic", "--model", d / "a.pt",
                       "--model", d / "c.pt", "--reference", f"{scores}:in", code=1), "other model")


def test_gate_refuses_settings_that_break_exchangeability_with_the_calibration(setup):
    d, scores = setup
    base = ["score", d / "ood.npz", "--model", d / "a.pt", "--reference", f"{scores}:ref", "--max-ood-fraction", "0.1"]
    one_line_error(run(*base, "--dequant-samples", "4", code=2), "--dequant-samples 4 (calibrated with 1)")
    one_line_error(run(*base, "--method", "bn-train", "--gate-score", "bn_train", code=2),
                   "bn-train", "depend on the batch")


def test_gate_errors(setup, tmp_path):
    d, scores = setup
    base = ["score", d / "ood.npz", "--model", d / "a.pt"]
    one_line_error(run(*base, "--reference", f"{scores}:val", code=1), "no group 'val'", "in, ood, ref")
    one_line_error(run(*base, "--reference", f"{tmp_path}/none.h5:in", code=1), "none.h5: no such file")
    one_line_error(run(*base, "--reference", f"{scores}:in", "--gate-score", "complexity", code=2),
                   "--gate-score", "log_likelihood")
    assert "FILE:GROUP" in collapsed(run(*base, "--reference", str(scores), code=2).stderr)
    one_line_error(run(*base, "--max-ood-fraction", "0.1", "--out", tmp_path / "y.h5", code=2), "--reference")
    run("score", d / "ref.npz", "--model", d / "a.pt", "--out", tmp_path / "plain.h5", "--name", "val", "--quiet")
    one_line_error(run(*base, "--method", "complexity", "--reference", f"{tmp_path}/plain.h5:val", code=1),
                   "no score 'complexity'", "log_likelihood")
    torch.manual_seed(9)
    save_model(randomize(create_flow("realnvp", (1, 8, 8), channels=4, blocks=1), seed=9), tmp_path / "other.pt")
    one_line_error(run("score", d / "ood.npz", "--model", tmp_path / "other.pt", "--reference", f"{scores}:in", code=1),
                   "other model")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.pt", "plain.h5"]


# ---------------------------------------------------------------- method errors and warnings


def test_method_errors_are_one_line(setup, tmp_path):
    d, _ = setup
    base = ["score", d / "in.npz", "--model", d / "a.pt", "--out", tmp_path / "s.h5"]
    one_line_error(run(*base, "--method", "waic", code=1), "waic", "at least twice")
    one_line_error(run(*base, "--method", "likelihood-ratio", code=1), "--background-model")
    assert "valid methods: likelihood, complexity" in collapsed(run(*base, "--method", "llr", code=2).stderr)
    result = run(*base, "--method", "complexity", "--compressor", "gzip", code=2)
    assert "png, zlib, lzma, bz2" in collapsed(result.stderr)
    torch.manual_seed(0)
    save_model(create_flow("realnvp", (1, 4, 4), channels=4, blocks=1), tmp_path / "small.pt")
    one_line_error(run(*base, "--method", "likelihood-ratio", "--background-model", tmp_path / "small.pt", code=1),
                   "small.pt", "(1, 4, 4)")
    one_line_error(run(*base, "--method", "waic", "--model", tmp_path / "small.pt", code=1), "small.pt")
    assert not (tmp_path / "s.h5").exists()
    np.save(tmp_path / "v.npy", np.random.default_rng(0).normal(size=(30, 4)).astype(np.float32))
    save_model(create_flow("tabular", (4,), hidden=8), tmp_path / "t.pt")
    one_line_error(run("score", tmp_path / "v.npy", "--model", tmp_path / "t.pt", "--out", tmp_path / "v.h5",
                       "--method", "complexity", code=1), "8-bit images")


def test_warnings_go_to_stderr(setup, tmp_path):
    d, _ = setup
    torch.manual_seed(0)
    save_model(create_flow("realnvp", (1, 8, 8), channels=4, blocks=1, batchnorm=False), tmp_path / "nobn.pt")
    result = run("score", d / "in.npz", "--model", tmp_path / "nobn.pt", "--method", "bn-train", "--method",
                 "likelihood", "--out", tmp_path / "s.h5", "--json", "--background-model", d / "bg.pt",
                 "--model", d / "a.pt")
    json.loads(result.stdout)
    assert "no batch-norm layers" in result.stderr and "--background-model is used only" in result.stderr
    assert "only --method waic uses more than the first" in result.stderr
    arrays, _ = store.read_group(tmp_path / "s.h5", "in")
    np.testing.assert_allclose(arrays["bn_train"], arrays["log_likelihood"])


def test_help_documents_every_method_and_the_orientation():
    text = help_text("score")
    for name in ("likelihood-ratio", "complexity", "bn-train", "waic", "--reference", "--max-ood-fraction"):
        assert name in text
    assert "batch composition" in text and "higher = more in-distribution" in text
    text = help_text("evaluate")
    assert "--all-scores" in text and "--typicality" in text and "--reference-group" in text


def test_background_model_trained_with_perturb_end_to_end(setup, tmp_path, monkeypatch):
    import ood_flow.train.losses as loop

    d, _ = setup
    rates = []
    real = loop.perturb_pixels
    monkeypatch.setattr(loop, "perturb_pixels", lambda x, rate, *a: rates.append(rate) or real(x, rate, *a))
    run_json("train", "--data", d / "in.npz", "--out", tmp_path / "bg.pt", "--perturb", "0.2", *TRAIN_SMALL)
    assert rates and set(rates) == {0.2}  # every training batch was perturbed
    assert load_checkpoint(tmp_path / "bg.pt")[1]["train_config"]["perturb"] == 0.2
    summary = run_json("score", d / "in.npz", "--model", d / "a.pt", "--method", "likelihood-ratio",
                       "--background-model", tmp_path / "bg.pt", "--out", tmp_path / "s.h5", "--quiet")
    assert "likelihood_ratio" in summary["scores"]
    one_line_error(run("train", "--data", d / "in.npz", "--out", tmp_path / "bad.pt", "--perturb", "1.5", *TRAIN_SMALL,
                       code=2), "perturb")

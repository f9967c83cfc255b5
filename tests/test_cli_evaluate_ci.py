"""`oodflow evaluate --ci`: bootstrap intervals in the JSON and the table, reproducible with --seed."""

import numpy as np
import pytest
from cli_helpers import one_line_error, run, run_json

from ood_flow import store
from ood_flow.evaluate import bootstrap_intervals


@pytest.fixture(scope="module")
def scores(tmp_path_factory):
    path = tmp_path_factory.mktemp("ci") / "s.h5"
    rng = np.random.default_rng(0)
    for name, mean, n in (("in", 1.0, 300), ("near", 0.5, 200), ("far", -2.0, 100)):
        arrays = {"log_likelihood": rng.normal(mean, 1.0, n), "id": np.arange(n)}
        store.write_group(path, name, arrays, {"source": name})
    return path


def test_json_holds_the_intervals_of_the_core_function(scores):
    report = run_json("evaluate", scores, "--in", "in", "--ood", "near", "--ood", "far", "--ci", "0.9",
                      "--bootstrap", "300", "--seed", "4")
    s_in = store.read_scores(scores, "in")
    for group in ("near", "far"):
        ci = report["ood"][group]["ci"]
        assert ci == bootstrap_intervals(s_in, store.read_scores(scores, group), level=0.9, n_boot=300, seed=4)
        assert ci["auroc"][0] <= report["ood"][group]["auroc"] <= ci["auroc"][1]
    assert report["by_score"]["log_likelihood"] == report["ood"]


def test_same_seed_same_intervals_other_seed_others(scores):
    args = ("evaluate", scores, "--in", "in", "--ood", "near", "--ci", "0.95", "--bootstrap", "200")
    a, b = run_json(*args, "--seed", "1"), run_json(*args, "--seed", "1")
    c = run_json(*args, "--seed", "2")
    assert a == b and a["ood"]["near"]["ci"]["auroc"] != c["ood"]["near"]["ci"]["auroc"]


def test_table_shows_each_interval(scores):
    out = run("evaluate", scores, "--in", "in", "--ood", "near", "--ci", "0.95", "--bootstrap", "200").stdout
    report = run_json("evaluate", scores, "--in", "in", "--ood", "near", "--ci", "0.95", "--bootstrap", "200")
    ci = report["ood"]["near"]
    for key in ("auroc", "aupr_in", "aupr_out", "fpr95"):
        assert f"{ci[key]:.3f}" in out and f"{ci['ci'][key][0]:.3f}-{ci['ci'][key][1]:.3f}" in out
    assert "95% percentile bootstrap interval, 200 resamples" in " ".join(out.split())


def test_without_ci_there_are_no_intervals(scores):
    assert "ci" not in run_json("evaluate", scores, "--in", "in", "--ood", "near")["ood"]["near"]


@pytest.mark.parametrize("args", [("--ci", "1.0"), ("--ci", "0"), ("--ci", "-0.5"),
                                  ("--ci", "0.95", "--bootstrap", "0")])
def test_bad_levels_are_usage_errors(scores, args):
    result = run("evaluate", scores, "--in", "in", "--ood", "near", *args, code=2)
    assert "Traceback" not in result.stderr


def test_nan_scores_are_one_line(tmp_path):
    path = tmp_path / "nan.h5"
    store.write_group(path, "in", {"log_likelihood": [1.0, 2.0, 3.0]}, {})
    store.write_group(path, "bad", {"log_likelihood": [1.0, np.nan]}, {})
    one_line_error(run("evaluate", path, "--in", "in", "--ood", "bad", "--ci", "0.95", code=1), "bad", "NaN")

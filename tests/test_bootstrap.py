"""Bootstrap intervals: the vectorized metrics equal ood_metrics on every resample; intervals are reproducible."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ood_flow.errors import InputError
from ood_flow.evaluate import bootstrap_intervals, ood_metrics
from ood_flow.evaluate.bootstrap import bootstrap_metrics, resampled_metrics
from ood_flow.evaluate.metrics import KEYS, dense_ranks


def _explicit(s_in, s_ood, idx_in, idx_ood, tpr):
    """ood_metrics of each resample, one at a time (the slow reference)."""
    rows = [ood_metrics(s_in[i], s_ood[j], tpr=tpr) for i, j in zip(idx_in, idx_ood, strict=True)]
    return {k: np.array([r[k] for r in rows]) for k in KEYS}


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31), n_in=st.integers(1, 30), n_ood=st.integers(1, 30),
       levels=st.integers(1, 6), tpr=st.sampled_from([0.5, 0.8, 0.9, 0.95, 1.0]))
def test_each_resample_matches_ood_metrics(seed, n_in, n_ood, levels, tpr):
    # few distinct values: many ties, which is where the formulas can go wrong
    rng = np.random.default_rng(seed)
    s_in = rng.integers(0, levels + 1, n_in).astype(float)
    s_ood = rng.integers(0, levels, n_ood).astype(float)
    s_in[rng.random(n_in) < 0.1] = -np.inf
    idx_in, idx_ood = rng.integers(0, n_in, (7, n_in)), rng.integers(0, n_ood, (7, n_ood))
    r_in, r_ood = (r.astype(np.int64) for r in dense_ranks(s_in, s_ood))
    fast = resampled_metrics(r_in[idx_in], r_ood[idx_ood], int(max(r_in.max(), r_ood.max())) + 1, tpr)
    slow = _explicit(s_in, s_ood, idx_in, idx_ood, tpr)
    for key in KEYS:
        np.testing.assert_allclose(fast[key], slow[key], rtol=0, atol=1e-12, err_msg=key)


def test_batches_do_not_change_the_result(monkeypatch):
    rng = np.random.default_rng(1)
    s_in, s_ood = rng.normal(1, 1, 300), rng.normal(0, 1, 200)
    whole = bootstrap_metrics(s_in, s_ood, n_boot=50, seed=3, tpr=0.95)
    monkeypatch.setattr("ood_flow.evaluate.bootstrap.MAX_CELLS", 7 * 500)  # 7 resamples per batch
    batched = bootstrap_metrics(s_in, s_ood, n_boot=50, seed=3, tpr=0.95)
    for key in KEYS:
        np.testing.assert_array_equal(whole[key], batched[key])


def test_intervals_are_reproducible_and_contain_the_estimate():
    rng = np.random.default_rng(0)
    s_in, s_ood = rng.normal(1, 1, 500), rng.normal(0, 1, 400)
    a = bootstrap_intervals(s_in, s_ood, seed=7, n_boot=300)
    assert a == bootstrap_intervals(s_in, s_ood, seed=7, n_boot=300)
    assert a != bootstrap_intervals(s_in, s_ood, seed=8, n_boot=300)
    point = ood_metrics(s_in, s_ood)
    for key in KEYS:
        lo, hi = a[key]
        assert lo <= point[key] <= hi and hi - lo > 0
    assert a["level"] == 0.95 and a["n_bootstrap"] == 300 and a["method"] == "percentile"


def test_width_shrinks_like_one_over_root_n():
    rng = np.random.default_rng(0)
    small = bootstrap_intervals(rng.normal(1, 1, 100), rng.normal(0, 1, 100), n_boot=400)
    large = bootstrap_intervals(rng.normal(1, 1, 1600), rng.normal(0, 1, 1600), n_boot=400)
    ratio = (small["auroc"][1] - small["auroc"][0]) / (large["auroc"][1] - large["auroc"][0])
    assert 2.5 < ratio < 6.5  # sqrt(16) = 4


def test_interval_covers_the_sampling_spread():
    """The 95 % interval's width is close to 3.92 x the AUROC's standard deviation over fresh samples."""
    rng = np.random.default_rng(5)
    aurocs = [ood_metrics(rng.normal(0.5, 1, 200), rng.normal(0, 1, 200))["auroc"] for _ in range(200)]
    ci = bootstrap_intervals(rng.normal(0.5, 1, 200), rng.normal(0, 1, 200), n_boot=1000)
    width = ci["auroc"][1] - ci["auroc"][0]
    assert 0.7 < width / (3.92 * np.std(aurocs)) < 1.4


def test_separated_scores_have_degenerate_intervals():
    ci = bootstrap_intervals([5.0, 6.0, 7.0], [1.0, 2.0], n_boot=100)
    assert ci["auroc"] == [1.0, 1.0] and ci["fpr95"] == [0.0, 0.0]
    swapped = bootstrap_intervals([1.0, 2.0], [5.0, 6.0, 7.0], n_boot=100)
    assert swapped["auroc"] == [0.0, 0.0] and swapped["fpr95"] == [1.0, 1.0]


@pytest.mark.parametrize("kwargs, fragment", [({"level": 1.0}, "confidence level"),
                                              ({"level": 0.0}, "confidence level"), ({"n_boot": 0}, "at least 1")])
def test_bad_arguments(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        bootstrap_intervals([1.0, 2.0], [0.0], **kwargs)


def test_nan_is_an_input_error():
    with pytest.raises(InputError, match="ood: 1 of 2 scores are NaN"):
        bootstrap_intervals([1.0, 2.0], [0.0, np.nan], ood_name="ood")
